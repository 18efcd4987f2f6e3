"""The segmentation node: unit parts, then the real node process over loopback DDS, then launch/config files."""

from __future__ import annotations

import ast
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from m2s_perception import node_params
from m2s_perception.inference import Segmenter
from m2s_perception.labels import load_label_map
from m2s_perception.models import ModelConfig, build_model
from m2s_perception.node import resolve_checkpoint
from m2s_perception.node_health import LatestScanSlot
from m2s_perception.pipeline import LabelSettings, ScanLabeller, ScanRejected, intensity_problem
from m2s_perception.pointcloud2 import FLOAT32, FLOAT64, UINT16, decode_cloud, make_cloud, read_fields
from m2s_training.checkpoint import save_checkpoint
from tests.clouds import FieldSpec, ros_cloud
from tests.segment_process import REPO, CloudClient, SegmentProcess, segment_command

SMALL_POLAR = ModelConfig(width=0.5, grid_size=(32, 24, 8), rho_range=(2.0, 34.0), z_range=(-3.0, 1.0), levels=3)
INTENSITY_SCALE = 255.0
MAX_RANGE = 40.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small_polar.pt"
    save_checkpoint(path, build_model(SMALL_POLAR), SMALL_POLAR)
    return path


@pytest.fixture(scope="module")
def segmenter(checkpoint) -> Segmenter:
    return Segmenter.from_checkpoint(checkpoint, device="cpu")


def lidar_points(n: int, seed: int) -> np.ndarray:
    """x, y, z, intensity (0..255) on a ring 3..50 m: some points beyond MAX_RANGE."""
    rng = np.random.default_rng(seed)
    rho, phi = rng.uniform(3, 50, n), rng.uniform(-np.pi, np.pi, n)
    z = rng.uniform(-2.5, 0.5, n)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z, rng.uniform(0, 255, n)], 1).astype(np.float32)


def header(sec: int, frame_id: str = "lidar") -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, 1000 + sec
    return h


# --- unit parts, no DDS -------------------------------------------------------------------------


def test_latest_scan_slot_keeps_only_the_newest():
    slot = LatestScanSlot()
    assert slot.take(timeout=0.01) is None
    slot.put("a")
    slot.put("b")
    slot.put("c")
    assert slot.dropped == 2
    assert slot.take(timeout=0.01) == "c"
    assert slot.take(timeout=0.01) is None
    slot.put("d")
    assert (slot.take(timeout=0.01), slot.dropped) == ("d", 2)


def test_latest_scan_slot_close_wakes_a_waiting_worker():
    slot = LatestScanSlot()
    result = []
    worker = threading.Thread(target=lambda: result.append(slot.take(timeout=10.0)))
    worker.start()
    slot.close()
    worker.join(timeout=2.0)
    assert not worker.is_alive()
    assert result == [None]


def test_intensity_problem_hints():
    assert intensity_problem(np.array([0.1, 0.5, 0.9], np.float32), 1.0) is None
    assert "intensity_scale" in intensity_problem(np.array([10.0, 200.0, 250.0], np.float32), 1.0)
    assert "set intensity_scale: 1.0" in intensity_problem(np.array([0.1, 0.5, 0.9], np.float32) / 255, 255.0)
    assert "negative" in intensity_problem(np.array([-3.0, 0.5], np.float32), 1.0)


def test_resolve_checkpoint(tmp_path, checkpoint):
    assert resolve_checkpoint(str(checkpoint)) == checkpoint
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nope\.pt"):
        resolve_checkpoint(str(tmp_path / "nope.pt"))


def test_labeller_raw_labels_colours_and_filters(segmenter):
    labeller = ScanLabeller(segmenter, load_label_map(), PointCloud2, PointField)
    points = lidar_points(300, seed=1)
    points[5, :3] = np.nan
    columns = {name: points[:, k].copy() for k, name in enumerate(("x", "y", "z", "intensity"))}
    msg = make_cloud(PointCloud2, PointField, header(7), columns)
    settings = LabelSettings(intensity_scale=255.0, min_range=5.0, max_range=40.0, label_format="raw")
    out = labeller.label(msg, settings).cloud
    fields = read_fields(out, ("label", "rgb", "intensity"))
    distance = np.linalg.norm(points[:, :3], axis=1)
    with np.errstate(invalid="ignore"):
        selected = (distance >= 5.0) & (distance <= 40.0)
    expected_train = np.zeros(300, np.uint8)
    expected_train[selected] = segmenter.predict(decode_cloud(msg, 255.0).points[selected]).labels
    label_map = load_label_map()
    np.testing.assert_array_equal(fields["label"].ravel(), label_map.to_raw(expected_train))
    assert fields["label"].ravel()[5] == 0 and not selected[5]
    rgb = fields["rgb"].ravel().view(np.uint32)
    expected_rgb = label_map.train_rgb[expected_train].astype(np.uint32)
    np.testing.assert_array_equal(rgb, (expected_rgb[:, 0] << 16) | (expected_rgb[:, 1] << 8) | expected_rgb[:, 2])
    np.testing.assert_allclose(fields["intensity"].ravel(), points[:, 3], rtol=1e-6)  # sensor units kept


def test_labeller_rejects_bad_scans(segmenter):
    labeller = ScanLabeller(segmenter, load_label_map(), PointCloud2, PointField)
    nan = np.full(4, np.nan, np.float32)
    all_nan = make_cloud(PointCloud2, PointField, header(1), {"x": nan, "y": nan, "z": nan})
    with pytest.raises(ScanRejected, match="all 4 points are NaN") as rejected:
        labeller.label(all_nan, LabelSettings())
    assert rejected.value.kind == "no_finite_points"
    with pytest.raises(ScanRejected, match="more than max_points=3"):
        labeller.label(all_nan, LabelSettings(max_points=3))


# --- the node process over loopback DDS --------------------------------------------------------


def kitti_f32(points: np.ndarray, sec: int) -> PointCloud2:
    specs = [FieldSpec(n, 4 * k, FLOAT32) for k, n in enumerate(("x", "y", "z", "intensity"))]
    values = {s.name: points[:, k] for k, s in enumerate(specs)}
    return ros_cloud(PointCloud2, PointField, header(sec, "velodyne"), specs, values, point_step=16)


def float64_padded(points: np.ndarray, sec: int) -> PointCloud2:
    specs = [FieldSpec("x", 0, FLOAT64), FieldSpec("y", 8, FLOAT64), FieldSpec("z", 16, FLOAT64)]
    specs.append(FieldSpec("i", 40, FLOAT64))
    values = {s.name: points[:, k].astype(np.float64) for k, s in enumerate(specs)}
    return ros_cloud(PointCloud2, PointField, header(sec, "lidar_f64"), specs, values, point_step=56)


def big_endian(points: np.ndarray, sec: int) -> PointCloud2:
    specs = [FieldSpec(n, 4 * k, FLOAT32) for k, n in enumerate(("x", "y", "z"))]
    specs.append(FieldSpec("intensity", 12, UINT16))
    values = {s.name: points[:, k] for k, s in enumerate(specs[:3])}
    values["intensity"] = points[:, 3].astype(np.uint16)
    msg = ros_cloud(PointCloud2, PointField, header(sec, "be"), specs, values, point_step=16, big_endian=True)
    return msg


def ouster_like(points: np.ndarray, sec: int, rows: int = 16) -> PointCloud2:
    """Organised rows × cols, point_step 48, uint16 reflectivity, ring, row padding, NaN returns."""
    specs = [FieldSpec(n, 4 * k, FLOAT32) for k, n in enumerate(("x", "y", "z"))]
    specs += [FieldSpec("t", 16, FLOAT32), FieldSpec("reflectivity", 20, UINT16), FieldSpec("ring", 22, UINT16)]
    points = points.copy()
    points[::7, :3] = np.nan  # no return
    values = {n: points[:, k] for k, n in enumerate(("x", "y", "z"))}
    values["t"] = np.zeros(len(points), np.float32)
    values["reflectivity"] = points[:, 3].astype(np.uint16)
    values["ring"] = np.repeat(np.arange(rows, dtype=np.uint16), len(points) // rows)
    return ros_cloud(
        PointCloud2, PointField, header(sec, "os_sensor"), specs, values, point_step=48, height=rows, row_padding=24
    )


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("segment_node")


def node_parameters(checkpoint: Path, name: str, **overrides) -> dict:
    return {
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "input_topic": f"/{name}/points",
        "output_topic": f"/{name}/labelled",
        "input_reliability": "reliable",  # the test publishes each scan once
        "intensity_scale": INTENSITY_SCALE,
        "max_range": MAX_RANGE,
        "max_points": 20_000,
        "publish_confidence": True,
        "stats_period_s": 0.3,
        **overrides,
    }


@pytest.fixture(scope="module")
def running_node(checkpoint, tmp_dir):
    name = "m2s_segment_test"
    # Every warning logged (no throttle): the malformed-message test looks for each problem's text.
    node = SegmentProcess(tmp_dir, name, node_parameters(checkpoint, name, warning_period_s=0.0))
    client = CloudClient(f"/{name}/points", f"/{name}/labelled")
    try:
        client.wait_for_node(node)
        yield node, client
    finally:
        client.close()
        node.stop(signal.SIGTERM)


def expected_labels(segmenter: Segmenter, msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    cloud = decode_cloud(msg, INTENSITY_SCALE)
    with np.errstate(invalid="ignore"):
        selected = cloud.finite & (np.linalg.norm(cloud.points[:, :3], axis=1) <= MAX_RANGE)
    labels = np.zeros(cloud.num_points, np.uint16)
    confidence = np.zeros(cloud.num_points, np.float32)
    prediction = segmenter.predict(cloud.points[selected])
    labels[selected], confidence[selected] = prediction.labels, prediction.confidence
    return labels, confidence


@pytest.mark.ros
@pytest.mark.parametrize(
    ("make", "num_points"), [(kitti_f32, 2000), (float64_padded, 1500), (big_endian, 1000), (ouster_like, 1024)]
)
def test_node_labels_every_layout_like_direct_prediction(running_node, segmenter, make, num_points):
    _node, client = running_node
    points = lidar_points(num_points, seed=num_points)
    msg = make(points, sec=num_points)
    out = client.request(msg)

    assert (out.header.frame_id, out.header.stamp.sec, out.header.stamp.nanosec) == (
        msg.header.frame_id,
        msg.header.stamp.sec,
        msg.header.stamp.nanosec,
    )
    assert (out.height, out.width) == (msg.height, msg.width)
    assert [f.name for f in out.fields] == ["x", "y", "z", "intensity", "rgb", "confidence", "label"]
    labels, confidence = expected_labels(segmenter, msg)
    got = read_fields(out, ("x", "label", "confidence"))
    np.testing.assert_array_equal(got["label"].ravel(), labels)
    np.testing.assert_allclose(got["confidence"].ravel(), confidence, atol=1e-5)
    decoded = decode_cloud(msg).points
    np.testing.assert_array_equal(got["x"].ravel(), decoded[:, 0])  # same points, same order (NaN included)
    assert (labels == 0).any() and (labels > 0).any()  # out-of-range / NaN points present and labelled 0


def _bad_messages() -> list[tuple[str, PointCloud2]]:
    good = kitti_f32(lidar_points(100, seed=3), sec=0)
    no_z = kitti_f32(lidar_points(100, seed=3), sec=0)
    no_z.fields = [f for f in no_z.fields if f.name != "z"]
    empty = kitti_f32(lidar_points(100, seed=3), sec=0)
    empty.width, empty.row_step = 0, 0
    empty.data = type(good.data)("B")
    short = kitti_f32(lidar_points(100, seed=3), sec=0)
    short.data = short.data[: len(short.data) // 2]
    unknown = kitti_f32(lidar_points(100, seed=3), sec=0)
    unknown.fields[1].datatype = 42
    all_nan = kitti_f32(np.full((50, 4), np.nan, np.float32), sec=0)
    huge = kitti_f32(lidar_points(30_000, seed=4), sec=0)
    return [
        ("missing field(s) 'z'", no_z),
        ("cloud has no points", empty),
        ("fewer than row_step * height", short),
        ("unknown datatype 42", unknown),
        ("all 50 points are NaN or infinite", all_nan),
        ("more than max_points=20000", huge),
    ]


@pytest.mark.ros
def test_node_survives_malformed_messages(running_node):
    node, client = running_node
    bad = _bad_messages()
    status = f"{node.name}: segmentation"

    def rejected() -> int:
        return int(client.diagnostics.get(status, {}).get("scans_rejected", 0))

    before = rejected()
    for k, (_problem, msg) in enumerate(bad):
        msg.header = header(100 + k)
        client.publisher.publish(msg)  # one at a time: scans sent together would replace each other
        assert client.wait_until(lambda k=k: rejected() == before + k + 1, 10), node.log()
    out = client.request(kitti_f32(lidar_points(500, seed=5), sec=200))
    assert out.width == 500
    assert node.process.poll() is None
    assert not any((100 + k, 1100 + k) in client.outputs for k in range(len(bad)))
    log = node.log()
    for problem, _msg in bad:
        assert problem in log, f"no warning naming {problem!r}; log:\n{log}"
    kinds = client.diagnostics[status]
    counts = {kind: int(kinds[f"rejected_{kind}"]) for kind in ("bad_format", "empty", "no_finite_points", "too_large")}
    assert counts == {"bad_format": 3, "empty": 1, "no_finite_points": 1, "too_large": 1}


@pytest.mark.ros
def test_node_stops_cleanly_on_sigterm(running_node):
    node, client = running_node
    client.request(kitti_f32(lidar_points(100, seed=6), sec=300))  # it is serving
    assert node.stop(signal.SIGTERM) == 0, node.log()


@pytest.mark.ros
def test_stale_scans_are_dropped_not_queued(checkpoint, tmp_dir):
    name = "m2s_segment_slow"
    node = SegmentProcess(tmp_dir, name, node_parameters(checkpoint, name, debug_delay_s=0.5))
    client = CloudClient(f"/{name}/points", f"/{name}/labelled")
    try:
        client.wait_for_node(node)
        burst = [kitti_f32(lidar_points(500, seed=s), sec=400 + s) for s in range(8)]
        for msg in burst:
            client.publisher.publish(msg)
            client.wait_until(lambda: False, 0.05)
        last = (burst[-1].header.stamp.sec, burst[-1].header.stamp.nanosec)
        assert client.wait_until(lambda: last in client.outputs, 20), node.log()
        status = f"{name}: segmentation"
        assert client.wait_until(
            lambda: client.diagnostics.get(status, {}).get("scans_processed") == str(len(client.outputs)), 5
        )
        stats = client.diagnostics[status]
        assert len(client.outputs) < len(burst)
        assert int(stats["scans_received"]) == len(burst)
        assert int(stats["scans_dropped"]) == len(burst) - len(client.outputs) > 0
        assert client.output_order[-1] == last  # the newest scan is the one that survived
        assert float(stats["total_ms_p50"]) >= 500.0
        assert node.stop(signal.SIGINT) == 0, node.log()
    finally:
        client.close()
        node.stop(signal.SIGTERM)


@pytest.mark.ros
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"checkpoint": "/nonexistent/model.pt"}, "checkpoint not found: /nonexistent/model.pt"),
        ({"label_format": "names"}, "label_format='names'; expected one of train, raw"),
        ({"chekpoint": "/tmp/model.pt"}, "unknown parameter 'chekpoint' (did you mean 'checkpoint'?)"),
    ],
)
def test_node_refuses_to_start_with_a_clear_error(checkpoint, tmp_dir, override, message):
    name = f"m2s_segment_bad_{next(iter(override))}"
    node = SegmentProcess(tmp_dir, name, {**node_parameters(checkpoint, name), **override})
    try:
        assert node.process.wait(60) == 1
    except subprocess.TimeoutExpired:
        pytest.fail(f"the node did not exit; log:\n{node.log()}")
    finally:
        node.stop(signal.SIGKILL)
    assert message in node.log()
    assert "Traceback" not in node.log()


def test_console_script_is_declared():
    assert "m2s-segment = m2s_perception.node:main" in (REPO / "setup.py").read_text()
    assert segment_command()


# --- launch file and config files ---------------------------------------------------------------


def test_params_file_matches_the_parameter_table():
    """config/segment.yaml lists exactly the node's parameters, each with the table's default and type."""
    params = yaml.safe_load((REPO / "config/segment.yaml").read_text())["/**"]["ros__parameters"]
    table = node_params.defaults()
    assert list(params) == list(table)
    for name, value in params.items():
        assert value == table[name] and type(value) is type(table[name]), (name, value, table[name])
    assert node_params.validate(params, load_label_map().class_names) == []
    assert params["input_reliability"] == "best_effort" and params["input_depth"] == 1  # sensor-data QoS


def test_parameter_table_validation():
    ok = node_params.defaults()
    classes = load_label_map().class_names
    assert node_params.validate({**ok, "filtered_classes": ["road", "terrain"]}, classes) == []
    assert node_params.validate({**ok, "max_points": 0}) == ["parameter max_points=0; expected 1..1e+08"]
    assert node_params.validate({**ok, "intensity_scale": 255}) == []  # an int where a float is declared
    assert node_params.validate({**ok, "label_format": "names"}) == [
        "parameter label_format='names'; expected one of train, raw"
    ]
    assert node_params.validate({**ok, "min_range": 5.0, "max_range": 5.0}) == [
        "min_range 5.0 must be below max_range 5.0"
    ]
    assert node_params.validate({**ok, "filtered_classes": ["road", "lava"]}, classes)[0].startswith(
        "filtered_classes: unknown class(es) 'lava'"
    )
    assert node_params.validate({**ok, "publish_confidence": 1}) == ["parameter publish_confidence=1; expected a bool"]
    assert node_params.unknown_parameters(["chekpoint", "use_sim_time", "zzz"], ["use_sim_time"]) == [
        "unknown parameter 'chekpoint' (did you mean 'checkpoint'?)",
        "unknown parameter 'zzz'",
    ]


def test_launch_file_declares_its_arguments():
    source = (REPO / "launch/segment.launch.py").read_text()
    tree = ast.parse(source)
    compile(tree, "segment.launch.py", "exec")
    declared = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "DeclareLaunchArgument"
    }
    assert declared == {"checkpoint", "input_topic", "output_topic", "use_sim_time", "params_file", "rviz"}
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    assert '"m2s-segment"' in source and '"m2s.rviz"' in source


def test_rviz_config_shows_both_clouds_best_effort():
    doc = yaml.safe_load((REPO / "config/m2s.rviz").read_text())
    displays = {
        d["Name"]: d
        for d in doc["Visualization Manager"]["Displays"]
        if d["Class"] == "rviz_default_plugins/PointCloud2"
    }
    topics = {d["Topic"]["Value"]: d for d in displays.values()}
    assert set(topics) == {"/velodyne_points", "/m2s/labelled_points"}
    labelled = topics["/m2s/labelled_points"]
    assert labelled["Color Transformer"] == "RGB8"
    assert all(d["Topic"]["Reliability Policy"] == "Best Effort" for d in topics.values())


@pytest.mark.ros
def test_node_refuses_a_checkpoint_with_other_classes(tmp_dir):
    path = tmp_dir / "seven_classes.pt"
    config = ModelConfig(**{**SMALL_POLAR.to_dict(), "num_classes": 7})
    save_checkpoint(path, build_model(config), config)
    name = "m2s_segment_bad_classes"
    node = SegmentProcess(tmp_dir, name, node_parameters(path, name))
    try:
        assert node.process.wait(60) == 1, node.log()
    except subprocess.TimeoutExpired:
        pytest.fail(f"the node did not exit; log:\n{node.log()}")
    finally:
        node.stop(signal.SIGKILL)
    assert "the model predicts 7 classes but the label map has 20" in node.log()
    assert "Traceback" not in node.log()


@pytest.mark.ros
def test_warnings_are_throttled_per_problem_kind_not_per_text(checkpoint, tmp_dir):
    """Senders control frame ids and field names: varying them must not multiply warnings."""
    name = "m2s_segment_throttle"
    node = SegmentProcess(tmp_dir, name, node_parameters(checkpoint, name))
    client = CloudClient(f"/{name}/points", f"/{name}/labelled")
    try:
        client.wait_for_node(node)
        status = f"{name}: segmentation"
        for k in range(6):
            msg = kitti_f32(lidar_points(100, seed=k), sec=500 + k)
            msg.header.frame_id = f"frame_{k}_" + "x" * k
            msg.fields[2].name = f"zz{k}"  # 'z' missing, each time with another field list
            client.publisher.publish(msg)
            assert client.wait_until(
                lambda k=k: int(client.diagnostics.get(status, {}).get("scans_rejected", 0)) == k + 1, 10
            ), node.log()
        warnings = [line for line in node.log().splitlines() if "missing field(s) 'z'" in line]
        assert len(warnings) == 1, "\n".join(warnings)
    finally:
        client.close()
        node.stop(signal.SIGTERM)


@pytest.mark.ros
def test_worker_survives_internal_errors_and_reports_them(checkpoint):
    """A failure inside the node (model, publish, bookkeeping) is an ERROR, counted; the worker keeps serving."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from m2s_perception.node import SegmentNode

    name = "m2s_segment_faults"
    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = [Parameter(key, value=value) for key, value in node_parameters(checkpoint, name).items()]
    node = SegmentNode(context=context, parameter_overrides=overrides, cli_args=["--ros-args", "-r", f"__node:={name}"])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = CloudClient(f"/{name}/points", f"/{name}/labelled")
    failures = {"label": 1, "publish": 1}
    real_label, real_publish = node.labeller.label, node.output_pub.publish

    def failing_label(*args, **kwargs):
        if failures["label"]:
            failures["label"] -= 1
            raise RuntimeError("injected model failure")
        return real_label(*args, **kwargs)

    def failing_publish(msg):
        if failures["publish"]:
            failures["publish"] -= 1
            raise RuntimeError("injected publish failure")
        real_publish(msg)

    node.labeller.label = failing_label
    node.output_pub.publish = failing_publish
    status = f"{name}: segmentation"
    try:
        assert client.wait_until(lambda: client.publisher.get_subscription_count() > 0, 30)
        for sec in (600, 601):  # the first fails in the model, the second in publish
            client.publisher.publish(kitti_f32(lidar_points(200, seed=sec), sec=sec))
            assert client.wait_until(
                lambda sec=sec: int(client.diagnostics.get(status, {}).get("internal_errors", 0)) == sec - 599, 10
            ), client.diagnostics.get(status)
        level, message = client.levels[status]
        assert level == 2 and "internal error" in message, (level, message)
        out = client.request(kitti_f32(lidar_points(300, seed=7), sec=602))  # still serving
        assert out.width == 300
        assert node._worker.is_alive()
        assert int(client.diagnostics[status]["scans_rejected"]) == 0  # not blamed on the input
    finally:
        client.close()
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
