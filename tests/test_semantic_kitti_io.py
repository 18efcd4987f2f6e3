import numpy as np
import pytest

from m2s_perception.labels import load_label_map
from m2s_training.data.semantic_kitti import (
    KittiFormatError,
    Sequence,
    camera_poses,
    drive_ids,
    lidar_poses,
    pack_labels,
    read_calib,
    read_labels,
    read_poses,
    read_scan,
    split_sequences,
    unpack_labels,
    write_calib,
    write_labels,
    write_poses,
    write_prediction,
    write_scan,
    write_times,
)


def test_label_packing_by_hand():
    packed = pack_labels(np.array([10, 254]), np.array([0, 3]))
    # 254 | 3 << 16 = 254 + 196608
    np.testing.assert_array_equal(packed, np.array([10, 196862], dtype=np.uint32))
    semantic, instance = unpack_labels(packed)
    np.testing.assert_array_equal(semantic, [10, 254])
    np.testing.assert_array_equal(instance, [0, 3])


def test_label_packing_rejects_overflow():
    with pytest.raises(ValueError):
        pack_labels(np.array([70000]), np.array([0]))


def test_scan_and_label_round_trip(tmp_path):
    points = np.array([[1.0, 2.0, 3.0, 0.5], [-1.0, 0.0, 0.25, 1.0]], dtype=np.float32)
    write_scan(tmp_path / "000000.bin", points)
    write_labels(tmp_path / "000000.label", np.array([40, 252]), np.array([0, 7]))
    np.testing.assert_array_equal(read_scan(tmp_path / "000000.bin"), points)
    semantic, instance = read_labels(tmp_path / "000000.label", num_points=2)
    np.testing.assert_array_equal(semantic, [40, 252])
    np.testing.assert_array_equal(instance, [0, 7])


def test_bad_scan_size_names_the_file(tmp_path):
    bad = tmp_path / "000001.bin"
    bad.write_bytes(b"\0" * 20)
    with pytest.raises(KittiFormatError, match=r"000001\.bin.*not a multiple of 16"):
        read_scan(bad)


def test_label_count_mismatch_names_the_file(tmp_path):
    write_labels(tmp_path / "a.label", np.array([40, 40, 40]))
    with pytest.raises(KittiFormatError, match=r"a\.label: 3 labels for a scan of 5 points"):
        read_labels(tmp_path / "a.label", num_points=5)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(KittiFormatError, match="does not exist"):
        read_scan(tmp_path / "nope.bin")


def test_lidar_pose_composition_by_hand():
    # Tr: LiDAR -> camera, the usual axis swap (x_cam = -y_lidar, y_cam = -z_lidar, z_cam = x_lidar)
    tr = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    # the camera moved 2 m forward: along camera z
    cam = np.eye(4)
    cam[2, 3] = 2.0
    pose = lidar_poses(cam[None], tr)[0]
    # forward for the LiDAR is +x
    np.testing.assert_allclose(pose, [[1, 0, 0, 2], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(camera_poses(pose[None], tr)[0], cam, atol=1e-12)


def test_static_point_lands_in_one_world_place(tmp_path):
    """A point seen from two poses maps to the same world coordinates via poses.txt + calib.txt."""
    rng = np.random.default_rng(0)
    tr = np.eye(4)
    q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    tr[:3, :3] = q * np.sign(np.linalg.det(q))  # a proper rotation
    tr[:3, 3] = [0.1, -0.2, 0.3]
    yaw = 0.3
    pose_b = np.eye(4)
    pose_b[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    pose_b[:3, 3] = [5.0, 1.0, 0.0]
    lidar = np.stack([np.eye(4), pose_b])
    write_poses(tmp_path / "poses.txt", camera_poses(lidar, tr))
    write_calib(tmp_path / "calib.txt", tr)
    back = lidar_poses(read_poses(tmp_path / "poses.txt"), read_calib(tmp_path / "calib.txt")["Tr"])
    world = np.array([8.0, 3.0, 1.0, 1.0])
    seen_a = np.linalg.inv(back[0]) @ world
    seen_b = np.linalg.inv(back[1]) @ world
    np.testing.assert_allclose(back[0] @ seen_a, back[1] @ seen_b, atol=1e-6)
    np.testing.assert_allclose(back, lidar, atol=1e-6)


def test_short_poses_and_calib_without_tr(tmp_path):
    write_poses(tmp_path / "poses.txt", np.stack([np.eye(4)]))
    with pytest.raises(KittiFormatError, match="1 poses for 3 scans"):
        read_poses(tmp_path / "poses.txt", expected=3)
    (tmp_path / "calib.txt").write_text("P0: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(KittiFormatError, match="no 'Tr'"):
        read_calib(tmp_path / "calib.txt")
    (tmp_path / "calib.txt").write_text("Tr: 1 0 0\n")
    with pytest.raises(KittiFormatError, match="3 numbers, expected 12"):
        read_calib(tmp_path / "calib.txt")


def _write_sequence(root, name, n_scans):
    seq = root / "sequences" / name
    for i in range(n_scans):
        write_scan(seq / "velodyne" / f"{i:06d}.bin", np.full((3, 4), i, dtype=np.float32))
        write_labels(seq / "labels" / f"{i:06d}.label", np.array([40, 10, 30]), np.array([0, 1, 2]))
    write_poses(seq / "poses.txt", np.stack([np.eye(4)] * n_scans))
    write_calib(seq / "calib.txt", np.eye(4))
    write_times(seq / "times.txt", np.arange(n_scans) * 0.1)


def test_sequence_reads_frames(tmp_path):
    _write_sequence(tmp_path, "08", 2)
    seq = Sequence(tmp_path, "8")
    assert len(seq) == 2 and seq.name == "08"
    frame = seq.frame(1)
    assert frame.points.shape == (3, 4) and frame.points[0, 0] == 1.0
    np.testing.assert_array_equal(frame.semantic, [40, 10, 30])
    np.testing.assert_allclose(seq.times, [0.0, 0.1])
    assert split_sequences(tmp_path, "val") == ["08"]
    assert split_sequences(tmp_path, "train") == []


def test_prediction_export_writes_raw_ids(tmp_path):
    label_map = load_label_map()
    path = write_prediction(tmp_path, "8", "000042", np.array([1, 6, 9, 19]), label_map)
    assert path == tmp_path / "sequences" / "08" / "predictions" / "000042.label"
    np.testing.assert_array_equal(np.fromfile(path, dtype=np.uint32), [10, 30, 40, 81])


def test_drive_ids_break_where_time_jumps_or_goes_back():
    # 10 Hz scans; a minute's pause after the third (m2s-synth --streets); a clock reset after the fifth
    times = np.array([0.0, 0.1, 0.2, 60.2, 60.3, 0.0, 0.1])
    np.testing.assert_array_equal(drive_ids(times), [0, 0, 0, 1, 1, 2, 2])
    # scans 1 s apart (--stride 10) are one drive: the break is relative to the usual step
    np.testing.assert_array_equal(drive_ids(np.arange(6) * 1.0), [0] * 6)
    # real KITTI stamps jitter around 0.1036 s: still one drive
    np.testing.assert_array_equal(drive_ids(np.array([0.0, 0.1037, 0.2072, 0.3110, 0.4145])), [0] * 5)
    np.testing.assert_array_equal(drive_ids(np.array([5.0])), [0])
    # --streets 3 with streets of 3, 2 and 2 scans: the median step is one within a street
    streets = np.array([0.0, 0.1, 0.2, 60.2, 60.3, 120.3, 120.4])
    np.testing.assert_array_equal(drive_ids(streets), [0, 0, 0, 1, 1, 2, 2])


def test_sequence_drives_from_times_and_one_drive_without_times(tmp_path):
    seq_dir = tmp_path / "sequences" / "00"
    for j in range(4):
        write_scan(seq_dir / "velodyne" / f"{j:06d}.bin", np.zeros((3, 4), np.float32))
    assert list(Sequence(tmp_path, "00").drives) == [0, 0, 0, 0]  # a plain folder of scans
    write_times(seq_dir / "times.txt", np.array([0.0, 0.1, 61.0, 61.1]))
    assert list(Sequence(tmp_path, "00").drives) == [0, 0, 1, 1]
