"""m2s-bag: SemanticKITTI → bag round trip, replay timing over real DDS, replay evaluation parity."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from m2s_perception.labels import load_label_map
from m2s_perception.pointcloud2 import read_fields
from m2s_training.bag import CLOUD_TOPIC, BagError, open_bag
from m2s_training.bag.kitti2bag import (
    TF_STATIC_QOS,
    BagLayout,
    convert_sequence,
    quaternion_to_rotation,
    rotation_to_quaternion,
    stamps_ns,
    transform_to_matrix,
)
from m2s_training.data import semantic_kitti as sk

TIMES = np.array([0.0, 0.1037, 0.2071, 0.3104, 0.4142])
RAW_IDS = np.array([0, 10, 40, 44, 48, 50, 70, 72, 80, 252])


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _transform(axis, angle, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = _rotation(np.asarray(axis, float), angle)
    matrix[:3, 3] = translation
    return matrix


def write_tiny_sequence(
    root: Path, sequence: str = "08", times: np.ndarray = TIMES, seed: int = 0, num_points: int = 700
) -> Path:
    """A hand-made SemanticKITTI sequence: random points and labels, a curved drive, a tilted calibration."""
    rng = np.random.default_rng(seed)
    folder = root / "sequences" / sequence
    tr = _transform([1, -1, 1], 2.1, [0.27, -0.08, -0.01])  # LiDAR → camera, like KITTI's axis swap
    lidar_poses = [_transform([0.1, 0.05, 1.0], 0.3 * i, [2.0 * i, 0.4 * i * i, 0.05 * i]) for i in range(len(times))]
    for index in range(len(times)):
        points = rng.normal(scale=15.0, size=(num_points + 37 * index, 4)).astype(np.float32)
        points[:, 3] = rng.uniform(0, 1, len(points))
        sk.write_scan(folder / "velodyne" / f"{index:06d}.bin", points)
        semantic = rng.choice(RAW_IDS, size=len(points))
        sk.write_labels(folder / "labels" / f"{index:06d}.label", semantic, rng.integers(0, 9, len(points)))
    sk.write_poses(folder / "poses.txt", sk.camera_poses(np.stack(lidar_poses), tr))
    sk.write_calib(folder / "calib.txt", tr)
    sk.write_times(folder / "times.txt", times)
    return root


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return write_tiny_sequence(tmp_path / "kitti")


def load_map_train(root: Path) -> np.ndarray:
    """Training ids of every point of sequence 08, scans concatenated."""
    seq = sk.Sequence(root, "08")
    return np.concatenate([load_label_map().to_train(seq.labels(i)[0]) for i in range(len(seq))])


def _messages(bag: Path, topic: str) -> list[tuple[int, object]]:
    reader = open_bag(bag)
    try:
        connections = [c for c in reader.connections if c.topic == topic]
        return [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(connections=connections)]
    finally:
        reader.close()


# --- kitti2bag ---------------------------------------------------------------------------------


def test_quaternion_round_trip_covers_every_branch():
    for axis, angle in [([0, 0, 1], 0.2), ([1, 0, 0], 3.1), ([0, 1, 0], 3.1), ([0, 0, 1], 3.1), ([1, 2, 3], 1.0)]:
        rotation = _rotation(np.asarray(axis, float), angle)
        np.testing.assert_allclose(quaternion_to_rotation(rotation_to_quaternion(rotation)), rotation, atol=1e-12)


@pytest.mark.parametrize(("storage", "version"), [("mcap", 9), ("sqlite3", 8)])
def test_kitti2bag_round_trip_is_exact(tiny_root: Path, tmp_path: Path, storage: str, version: int):
    layout = BagLayout(start_time_ns=1_600_000_000_123_000_000)
    bag = convert_sequence(tiny_root, "8", tmp_path / "seq08", layout=layout, storage=storage, version=version)
    seq = sk.Sequence(tiny_root, "08")
    expected_stamps = [1_600_000_000_123_000_000 + round(t * 1e9) for t in TIMES]
    assert list(stamps_ns(TIMES, layout.start_time_ns)) == expected_stamps

    clouds = _messages(bag, layout.cloud_topic)
    assert len(clouds) == len(seq)
    for index, (log_time, msg) in enumerate(clouds):
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert stamp == log_time == expected_stamps[index]
        assert msg.header.frame_id == "velodyne"
        assert [(f.name, f.datatype) for f in msg.fields] == [("x", 7), ("y", 7), ("z", 7), ("intensity", 7)]
        # x, y, z, intensity float32 packed without padding: the data is the .bin file, byte for byte.
        assert bytes(msg.data) == seq.scan_paths[index].read_bytes()

    label_map = load_label_map()
    truths = _messages(bag, layout.labels_topic)
    assert [t for t, _ in truths] == expected_stamps
    for index, (_, msg) in enumerate(truths):
        semantic, _ = seq.labels(index)
        view = read_fields(msg, ["x", "label", "rgb"]).reshape(-1)
        np.testing.assert_array_equal(view["label"], semantic)
        np.testing.assert_array_equal(view["x"], seq.points(index)[:, 0])
        rgb = view["rgb"].astype(np.float32).view(np.uint32)
        colours = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=1)
        np.testing.assert_array_equal(colours, label_map.raw_rgb_lut[semantic])

    transforms = _messages(bag, "/tf")
    assert [t for t, _ in transforms] == expected_stamps
    for index, (_, msg) in enumerate(transforms):
        (transform,) = msg.transforms
        assert (transform.header.frame_id, transform.child_frame_id) == ("world", "velodyne")
        np.testing.assert_allclose(transform_to_matrix(transform.transform), seq.poses[index], atol=1e-9)

    (_, static), = _messages(bag, "/tf_static")  # fmt: skip
    np.testing.assert_allclose(
        transform_to_matrix(static.transforms[0].transform), np.linalg.inv(seq.calib["Tr"]), atol=1e-9
    )
    reader = open_bag(bag)
    qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    reader.close()
    assert qos["/tf_static"] == [TF_STATIC_QOS]


def test_kitti2bag_refuses_to_overwrite_and_leaves_no_partial_bag(tiny_root: Path, tmp_path: Path):
    bag = convert_sequence(tiny_root, "08", tmp_path / "bag", progress=False)
    with pytest.raises(BagError, match="already exists"):
        convert_sequence(tiny_root, "08", bag, progress=False)
    (tiny_root / "sequences/08/labels/000003.label").write_bytes(b"\0" * 6)  # truncated labels
    with pytest.raises(sk.KittiFormatError, match=r"000003\.label"):
        convert_sequence(tiny_root, "08", tmp_path / "broken", progress=False)
    assert not (tmp_path / "broken").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "kitti"]  # no temporaries left behind


# --- command line errors -----------------------------------------------------------------------


def _m2s_bag(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "m2s_training.bag.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_cli_names_a_missing_bag_and_a_missing_topic(tiny_root: Path, tmp_path: Path):
    missing = _m2s_bag("replay", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert f"{tmp_path / 'nope'}: bag does not exist" in missing.stderr

    converted = _m2s_bag("kitti2bag", "--data", str(tiny_root), "--sequence", "08", "--out", str(tmp_path / "b"))
    assert converted.returncode == 0, converted.stderr
    no_topic = _m2s_bag("replay", str(tmp_path / "b"), "--topics", "/lidar/points")
    assert no_topic.returncode == 2
    assert "no topic '/lidar/points'" in no_topic.stderr and "/velodyne_points (sensor_msgs/msg/PointCloud2)" in (
        no_topic.stderr
    )


# --- replay ------------------------------------------------------------------------------------


class CloudListener:
    """A subscriber in its own rclpy context, spinning in a thread; records arrival times per stamp."""

    def __init__(self, topic: str, name: str = "m2s_test_listener"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        self.arrivals: list[tuple[float, int]] = []  # (time.monotonic(), header stamp ns)
        self._context = rclpy.Context()
        rclpy.init(context=self._context)
        self._node = rclpy.create_node(name, context=self._context)
        # Reliable: matches `m2s-bag replay --reliable`, so a loaded machine loses nothing.
        qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self._node.create_subscription(PointCloud2, topic, self._on_cloud, qos)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _on_cloud(self, msg) -> None:
        self.arrivals.append((time.monotonic(), msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec))

    def close(self) -> None:
        self._executor.shutdown()
        self._node.destroy_node()
        self._context.try_shutdown()
        self._thread.join(timeout=5)


def test_replay_keeps_the_bag_timing_scaled_by_rate(tmp_path: Path):
    # 6 scans 0.4 s apart: 2.0 s of bag time, 1.0 s at --rate 2. The tolerance allows a loaded
    # machine to deliver late, but a replay at rate 1 (2.0 s) or without timing (~0 s) fails.
    times = np.arange(6) * 0.4
    root = write_tiny_sequence(tmp_path / "kitti", times=times)
    bag = convert_sequence(root, "08", tmp_path / "bag", progress=False)
    listener = CloudListener("/velodyne_points")
    try:
        result = _m2s_bag("replay", str(bag), "--rate", "2", "--topics", "/velodyne_points",
                          "--wait-for-subscriber", "20", "--reliable")  # fmt: skip
        deadline = time.monotonic() + 5
        while len(listener.arrivals) < len(times) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert "published 6 messages" in result.stdout
    arrival, stamps = np.array(listener.arrivals).T
    assert list(stamps.astype(np.int64)) == list(stamps_ns(times, BagLayout().start_time_ns))
    span = arrival[-1] - arrival[0]
    assert 0.85 <= span <= 1.6, f"6 scans over 2.0 s of bag time arrived within {span:.3f} s at rate 2"
    gaps = np.diff(arrival)
    assert np.median(gaps) == pytest.approx(0.2, abs=0.08), gaps


def test_replay_loops_a_bag(tmp_path: Path):
    root = write_tiny_sequence(tmp_path / "kitti", times=np.arange(3) * 0.05)
    bag = convert_sequence(root, "08", tmp_path / "bag", progress=False)
    listener = CloudListener("/velodyne_points")
    try:
        result = _m2s_bag("replay", str(bag), "--loop", "3", "--topics", "/velodyne_points",
                          "--wait-for-subscriber", "20", "--reliable")  # fmt: skip
        deadline = time.monotonic() + 5
        while len(listener.arrivals) < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert len(listener.arrivals) == 9
    assert [s for _, s in listener.arrivals][:3] == [s for _, s in listener.arrivals][6:]


# --- replay evaluation -------------------------------------------------------------------------


def _tiny_checkpoint(path: Path) -> Path:
    import torch

    from m2s_perception.models import ModelConfig, build_model
    from m2s_training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(
        backbone="polar", width=0.25, grid_size=(24, 32, 8), point_channels=(16, 32), base_channels=16, levels=2
    )
    save_checkpoint(path, build_model(config), config)
    return path


def test_lockstep_evaluation_equals_m2s_eval(tmp_path: Path):
    from m2s_training.bag.evaluate import EvaluationOptions, evaluate_bag
    from m2s_training.evaluate import evaluate
    from m2s_training.synth import generate

    root = tmp_path / "synth"
    generate(root, ["08"], preset="tiny", scans=3, seed=1)
    bag = convert_sequence(root, "08", tmp_path / "bag", progress=False)
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")

    result = evaluate_bag(bag, checkpoint, tmp_path / "bag_eval", EvaluationOptions(lockstep=True, device="cpu"))
    reference = evaluate(checkpoint, root, "val", tmp_path / "eval", device="cpu")

    assert (result["scans"], result["scans_scored"], result["scans_dropped"]) == (3, 3, 0)
    assert result["confusion"] == reference["confusion"]  # label for label, not only the mean
    assert abs(result["miou"] - reference["miou"]) < 1e-9
    assert result["iou"] == reference["iou"]
    assert result["latency_ms"]["count"] == 3 and 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["max"]
    assert (tmp_path / "bag_eval" / "iou.png").stat().st_size > 0

    recorded = _messages(tmp_path / "bag_eval" / "output_bag", "/m2s/labelled_points")
    truth = _messages(bag, "/velodyne_points/ground_truth")
    assert [t for t, _ in recorded] == [t for t, _ in truth]
    assert [m.width for _, m in recorded] == [m.width for _, m in truth]
    assert len(_messages(tmp_path / "bag_eval" / "output_bag", "/velodyne_points")) == 3  # input copied beside


def test_evaluate_names_missing_ground_truth_topic(tiny_root: Path, tmp_path: Path):
    from m2s_training.bag.evaluate import EvaluationOptions, evaluate_bag

    bag = convert_sequence(tiny_root, "08", tmp_path / "bag", progress=False)
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(BagError, match="no topic '/lidar/labels'"):
        evaluate_bag(bag, checkpoint, tmp_path / "out", EvaluationOptions(labels_topic="/lidar/labels"))
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_timed_evaluation_counts_the_scans_a_slow_node_drops(tmp_path: Path):
    from m2s_training.bag.evaluate import EvaluationOptions, evaluate_bag

    # 6 scans at 10 Hz into a node that needs > 0.3 s per scan: it keeps only the newest scan, so
    # most scans get no output, and each of those must be reported as dropped.
    root = write_tiny_sequence(tmp_path / "kitti", times=np.arange(6) * 0.1)
    bag = convert_sequence(root, "08", tmp_path / "bag", progress=False)
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")
    options = EvaluationOptions(rate=1.0, device="cpu", node_parameters={"debug_delay_s": 0.3})
    result = evaluate_bag(bag, checkpoint, tmp_path / "out", options)

    stamps = list(stamps_ns(np.arange(6) * 0.1, BagLayout().start_time_ns))
    assert result["scans"] == 6 and result["mode"] == "rate 1"
    assert 2 <= result["scans_dropped"] <= 5
    assert result["scans_scored"] + result["scans_dropped"] == 6
    assert set(result["dropped_stamps_ns"]) < set(stamps)
    assert result["latency_ms"]["count"] == result["scans_scored"]
    assert result["latency_ms"]["p50"] >= 300  # the node's 0.3 s delay is in every answered scan


def test_evaluation_receives_hdl64_sized_clouds(tmp_path: Path):
    from m2s_training.bag.evaluate import EvaluationOptions, evaluate_bag

    # ~2 MB clouds: best-effort DDS loses fragments of these even on loopback; nothing may be lost here.
    root = write_tiny_sequence(tmp_path / "kitti", times=np.arange(2) * 0.1, num_points=130_000)
    bag = convert_sequence(root, "08", tmp_path / "bag", progress=False)
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")
    result = evaluate_bag(bag, checkpoint, tmp_path / "out", EvaluationOptions(lockstep=True, device="cpu"))
    assert (result["scans_scored"], result["scans_dropped"]) == (2, 0)
    assert result["points"] == int(np.count_nonzero(load_map_train(root)))


# --- bag2kitti ---------------------------------------------------------------------------------


def test_bag2kitti_round_trip_of_a_kitti2bag_bag_equals_the_original(tiny_root: Path, tmp_path: Path):
    bag = convert_sequence(tiny_root, "08", tmp_path / "bag", progress=False)
    done = _m2s_bag("bag2kitti", str(bag), "--out", str(tmp_path / "mine"), "--sequence", "30",
                    "--labels-topic", "/velodyne_points/ground_truth")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote 5 scans" in done.stdout and "poses: written" in done.stdout
    original, exported = sk.Sequence(tiny_root, "08"), sk.Sequence(tmp_path / "mine", "30")
    assert len(exported) == len(original) == 5
    for index in range(5):
        assert exported.scan_paths[index].read_bytes() == original.scan_paths[index].read_bytes()
        np.testing.assert_array_equal(exported.labels(index)[0], original.labels(index)[0])  # semantic ids
    np.testing.assert_allclose(exported.times, TIMES, atol=1e-9)
    np.testing.assert_allclose(exported.poses, original.poses, atol=1e-7)  # LiDAR poses, from /tf

    again = _m2s_bag("bag2kitti", str(bag), "--out", str(tmp_path / "mine"), "--sequence", "30")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_a_sequence_of_several_streets_keeps_its_breaks_through_a_bag(tmp_path: Path):
    """``m2s-synth --streets``: a minute between streets, each street's poses from the origin again.
    kitti2bag → bag2kitti keeps both, so fusion still never crosses from one street to the next."""
    times = np.array([0.0, 0.1037, 0.2071, 60.3104, 60.4142])  # street 0: scans 0-2, street 1: 3-4
    root = write_tiny_sequence(tmp_path / "kitti", times=times)
    original = sk.Sequence(root, "08")
    poses = original.poses.copy()
    poses[3:] = poses[:2]  # the second street starts where the first did, as --streets writes it
    sk.write_poses(root / "sequences" / "08" / "poses.txt", sk.camera_poses(poses, original.calib["Tr"]))
    bag = convert_sequence(root, "08", tmp_path / "bag", progress=False)
    stamps = [t for t, _ in _messages(bag, CLOUD_TOPIC)]
    assert stamps[3] - stamps[2] == 60_103_300_000  # the break is in the bag's time, to the nanosecond

    done = _m2s_bag("bag2kitti", str(bag), "--out", str(tmp_path / "mine"), "--sequence", "31")
    assert done.returncode == 0, done.stderr
    exported = sk.Sequence(tmp_path / "mine", "31")
    assert sk.Sequence(root, "08").drives.tolist() == exported.drives.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_allclose(exported.times, times, atol=1e-9)
    np.testing.assert_allclose(exported.poses[3:], poses[:2], atol=1e-7)


def test_bag2kitti_pseudo_labels_intensity_scale_and_non_finite_points(tmp_path: Path):
    """A driver-like bag: intensity 0..255, NaN points, node output in training ids with one scan missing."""
    from rosbags.rosbag2 import Writer

    from m2s_training.bag import POINTCLOUD2, TYPESTORE
    from m2s_training.bag.bag2kitti import ExportOptions, export_sequence
    from m2s_training.bag.kitti2bag import SENSOR_DATA_QOS, cloud_message

    label_map = load_label_map()
    rng = np.random.default_rng(3)
    scans, train_ids = [], []
    with Writer(tmp_path / "drive", version=9) as writer:
        points_c = writer.add_connection(
            "/points", POINTCLOUD2, typestore=TYPESTORE, offered_qos_profiles=[SENSOR_DATA_QOS]
        )
        labels_c = writer.add_connection("/m2s/labelled_points", POINTCLOUD2, typestore=TYPESTORE)
        for k in range(3):
            stamp = 1_700_000_000 * 10**9 + k * 100_000_000
            xyz = rng.normal(scale=10, size=(200, 3)).astype(np.float32)
            xyz[::50] = np.nan  # 4 points without a return
            intensity = rng.integers(0, 256, 200).astype(np.float32)
            labels = rng.integers(0, label_map.num_classes, 200).astype(np.uint16)
            columns = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": intensity}
            writer.write(
                points_c, stamp, TYPESTORE.serialize_cdr(cloud_message(stamp, "os_sensor", columns), POINTCLOUD2)
            )
            if k != 1:  # the node dropped scan 1
                labelled = cloud_message(stamp, "os_sensor", {**columns, "label": labels})
                writer.write(labels_c, stamp + 5_000_000, TYPESTORE.serialize_cdr(labelled, POINTCLOUD2))
                scans.append(np.column_stack([xyz, intensity / 255.0]).astype(np.float32))
                train_ids.append(labels)
    options = ExportOptions(cloud_topic="/points", labels_topic="/m2s/labelled_points", label_format="train",
                            intensity_scale=255.0)  # fmt: skip
    report = export_sequence(tmp_path / "drive", tmp_path / "mine", "31", options, progress=False)
    assert (report.scans, report.unlabelled_scans, report.non_finite_points) == (2, 1, 8)
    assert report.poses.startswith("not written: no /tf world -> os_sensor")
    assert report.intensity_warning is None  # 0..255 with scale 255 is on scale
    unscaled = export_sequence(tmp_path / "drive", tmp_path / "mine", "32", ExportOptions(cloud_topic="/points"), False)
    assert "set intensity_scale" in unscaled.intensity_warning
    folder = tmp_path / "mine" / "sequences" / "31"
    assert not (folder / "poses.txt").exists() and (folder / "times.txt").read_text().split() == [
        "0.000000e+00",
        "2.000000e-01",
    ]
    for index in range(2):
        finite = np.isfinite(scans[index]).all(axis=1)
        exported = sk.read_scan(folder / "velodyne" / f"{index:06d}.bin")
        np.testing.assert_array_equal(exported[:, :3], scans[index][finite, :3])
        np.testing.assert_allclose(exported[:, 3], scans[index][finite, 3], rtol=1e-6)
        semantic, _ = sk.read_labels(folder / "labels" / f"{index:06d}.label", len(exported))
        np.testing.assert_array_equal(label_map.to_train(semantic), train_ids[index][finite])
