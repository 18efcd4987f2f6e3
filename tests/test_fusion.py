"""M2SKD multi-scan fusion on a hand-built sequence whose objects are known in the world frame."""

from __future__ import annotations

import numpy as np
import pytest

from m2s_training.data.semantic_kitti import (
    KittiFormatError,
    Sequence,
    camera_poses,
    write_calib,
    write_labels,
    write_poses,
    write_scan,
    write_times,
)
from m2s_training.fusion import FusedPoints, MultiScanFuser

NUM_SCANS = 6
PERSON, MOVING_PERSON, POLE, CAR, BUILDING, TRUNK = 30, 254, 80, 10, 50, 71


def _rotation(yaw: float, pitch: float = 0.0) -> np.ndarray:
    cz, sz, cy, sy = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ ry


def _pose(j: int) -> np.ndarray:
    """T_world_lidar of scan j: the sensor drives and turns; nothing is the identity."""
    pose = np.eye(4)
    pose[:3, :3] = _rotation(0.15 * j + 0.3, 0.02 * j)
    pose[:3, 3] = [2.0 * j + 1.0, 0.7 * j - 3.0, 0.05 * j]
    return pose


def _blob(rng: np.random.Generator, centre, n: int) -> np.ndarray:
    return np.asarray(centre, float) + rng.normal(scale=0.3, size=(n, 3))


def _objects_in_world(j: int) -> list[tuple[np.ndarray, int, int]]:
    """(world xyz, raw id, instance id) of everything scan j sees."""
    rng = np.random.default_rng(7)  # same seed every scan: static objects have identical world points
    person = _blob(rng, [10, 5, 0], 20)
    car = _blob(rng, [15, -4, 0], 30)
    building = _blob(rng, [30, 0, 2], 40)
    pole = _blob(rng, [8, -6, 1], 10)
    trunk = _blob(rng, [12, 8, 0], 10)
    walker = _blob(rng, [5, 10, 0], 15) + np.array([1.0 * j, 0, 0])  # raw id says moving
    runner = _blob(rng, [20, 10, 0], 12) + np.array([0, 3.0 * j, 0])  # static raw id, but it moves 3 m per scan
    objects = [
        (person, PERSON, 1),
        (car, CAR, 2),
        (building, BUILDING, 0),
        (trunk, TRUNK, 0),  # hard class without an instance id: never fused
        (walker, MOVING_PERSON, 4),
        (runner, PERSON, 5),
    ]
    if j <= 1:
        objects.append((pole, POLE, 3))  # only the first two scans see the pole
    return objects


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> Sequence:
    root = tmp_path_factory.mktemp("kitti")
    seq_dir = root / "sequences" / "00"
    tr = np.eye(4)
    tr[:3, :3] = _rotation(-np.pi / 2) @ _rotation(0, np.pi / 2)  # a KITTI-like LiDAR→camera turn
    tr[:3, 3] = [0.1, -0.05, -0.3]
    poses = np.stack([_pose(j) for j in range(NUM_SCANS)])
    for j in range(NUM_SCANS):
        objects = _objects_in_world(j)
        world = np.concatenate([o[0] for o in objects])
        lidar = (world - poses[j][:3, 3]) @ poses[j][:3, :3]  # inverse of T_world_lidar
        remission = (np.arange(len(world)) % 50 / 50.0)[:, None]
        write_scan(seq_dir / "velodyne" / f"{j:06d}.bin", np.hstack([lidar, remission]))
        semantic = np.concatenate([np.full(len(o[0]), o[1]) for o in objects])
        instance = np.concatenate([np.full(len(o[0]), o[2]) for o in objects])
        write_labels(seq_dir / "labels" / f"{j:06d}.label", semantic, instance)
    write_calib(seq_dir / "calib.txt", tr)
    write_poses(seq_dir / "poses.txt", camera_poses(poses, tr))
    write_times(seq_dir / "times.txt", np.arange(NUM_SCANS) * 0.1)
    return Sequence(root, "00")


def _points_of(sequence: Sequence, index: int, raw_id: int, instance_id: int) -> np.ndarray:
    points = sequence.points(index)
    semantic, instance = sequence.labels(index)
    return points[(semantic == raw_id) & (instance == instance_id)]


def _fused_instance(fused: FusedPoints, raw_id: int, instance_id: int) -> np.ndarray:
    return fused.points[(fused.semantic == raw_id) & (fused.instance == instance_id)]


def test_static_instance_lands_on_itself_and_only_hard_instances_are_fused(sequence):
    fused = MultiScanFuser(k_previous=4, moving="drop").fuse(sequence, 5)
    person_now = _points_of(sequence, 5, PERSON, 1)
    person_fused = _fused_instance(fused, PERSON, 1)
    assert len(person_fused) == 4 * len(person_now)  # one copy from each of scans 1..4
    for copy in np.split(person_fused, 4):
        np.testing.assert_allclose(copy[:, :3], person_now[:, :3], atol=1e-4)
        np.testing.assert_array_equal(copy[:, 3], person_now[:, 3])  # remission travels along
    # car is not a hard class, building and the instance-less trunk have no instance, the pole left
    # the view, the walker is labelled moving and the runner moved 3 m per scan: none are fused.
    assert set(np.unique(fused.semantic)) == {PERSON}
    assert set(np.unique(fused.instance)) == {1}
    assert fused.points.dtype == np.float32 and fused.points.shape[1] == 4


def test_moving_instances_are_aligned_to_their_centroid_in_scan_t(sequence):
    fused = MultiScanFuser(k_previous=4, moving="align").fuse(sequence, 5)
    for raw_id, instance_id in [(MOVING_PERSON, 4), (PERSON, 5)]:
        now = _points_of(sequence, 5, raw_id, instance_id)[:, :3]
        copies = np.split(_fused_instance(fused, raw_id, instance_id)[:, :3], 4)
        assert len(copies) == 4
        for copy in copies:
            np.testing.assert_allclose(copy.mean(axis=0), now.mean(axis=0), atol=1e-4)
            # a rigid shift of the neighbour's copy: its shape is kept (here identical to scan t's)
            np.testing.assert_allclose(copy - copy.mean(0), now - now.mean(0), atol=1e-4)


def test_only_present_controls_instances_missing_from_scan_t(sequence):
    pole_in_scan1 = _points_of(sequence, 1, POLE, 3)
    assert len(_fused_instance(MultiScanFuser(k_previous=4).fuse(sequence, 5), POLE, 3)) == 0
    fused = MultiScanFuser(k_previous=4, only_present=False).fuse(sequence, 5)
    pole = _fused_instance(fused, POLE, 3)
    assert len(pole) == len(pole_in_scan1)  # scan 0 is out of the k=4 window, scan 1 is in
    expected_world = _objects_in_world(1)[-1][0]
    pose5 = sequence.poses[5]
    np.testing.assert_allclose(pole[:, :3], (expected_world - pose5[:3, 3]) @ pose5[:3, :3], atol=1e-4)


def test_window_sizes_are_respected(sequence):
    person_size = len(_points_of(sequence, 0, PERSON, 1))
    fuser = MultiScanFuser(k_previous=2, moving="drop")
    assert fuser.neighbours(5, NUM_SCANS) == [3, 4]
    assert len(fuser.fuse(sequence, 5)) == 2 * person_size
    assert len(fuser.fuse(sequence, 0)) == 0  # nothing before the first scan
    pole_size = len(_points_of(sequence, 0, POLE, 3))
    assert len(MultiScanFuser(k_previous=4, moving="drop").fuse(sequence, 1)) == person_size + pole_size
    following = MultiScanFuser(k_previous=0, k_next=2, moving="drop")
    assert following.neighbours(2, NUM_SCANS) == [3, 4]
    assert following.neighbours(5, NUM_SCANS) == []
    assert len(following.fuse(sequence, 2)) == 2 * person_size


def test_hard_classes_are_configurable(sequence):
    fused = MultiScanFuser(hard_classes=["car"], k_previous=4).fuse(sequence, 5)
    assert set(np.unique(fused.semantic)) == {CAR}
    with pytest.raises(KeyError, match="unknown class"):
        MultiScanFuser(hard_classes=["unicorn"])


def test_cache_hit_returns_identical_arrays(sequence, tmp_path, monkeypatch):
    fuser = MultiScanFuser(k_previous=3, cache_dir=tmp_path)
    first = fuser.fuse(sequence, 4)
    path = fuser.cache_path(sequence, 4)
    assert path is not None and path.is_file()
    other_config = MultiScanFuser(k_previous=2, cache_dir=tmp_path).cache_path(sequence, 4)
    assert other_config != path

    def must_not_recompute(*args):
        raise AssertionError("cache miss")

    monkeypatch.setattr(MultiScanFuser, "_fuse", must_not_recompute)
    second = MultiScanFuser(k_previous=3, cache_dir=tmp_path).fuse(sequence, 4)
    for a, b in [(first.points, second.points), (first.semantic, second.semantic), (first.instance, second.instance)]:
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_corrupt_cache_is_recomputed(sequence, tmp_path):
    fuser = MultiScanFuser(k_previous=3, cache_dir=tmp_path)
    expected = fuser.fuse(sequence, 4)
    fuser.cache_path(sequence, 4).write_bytes(b"not a zip")
    np.testing.assert_array_equal(fuser.fuse(sequence, 4).points, expected.points)


def test_bad_arguments_and_unlabelled_sequences_fail_clearly(sequence, tmp_path):
    with pytest.raises(ValueError, match="moving"):
        MultiScanFuser(moving="ignore")
    with pytest.raises(ValueError, match="k_previous"):
        MultiScanFuser(k_previous=-1)
    with pytest.raises(IndexError, match="out of range"):
        MultiScanFuser().fuse(sequence, NUM_SCANS)
    bare = tmp_path / "sequences" / "01" / "velodyne"
    write_scan(bare / "000000.bin", np.zeros((3, 4), np.float32))
    with pytest.raises(KittiFormatError, match="needs labels"):
        MultiScanFuser().fuse(Sequence(tmp_path, "01"), 0)


OFFICIAL_THING_CLASSES = ["bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist"]


def _official_fuser(**kwargs) -> MultiScanFuser:
    return MultiScanFuser(
        hard_classes=OFFICIAL_THING_CLASSES, k_previous=4, placement="centroid", full_history_only=True, **kwargs
    )


def test_official_centroid_placement_ignores_poses(sequence, monkeypatch):
    def no_poses(self):
        raise AssertionError("the official placement must not read poses")

    monkeypatch.setattr(Sequence, "poses", property(no_poses))
    fused = _official_fuser().fuse(sequence, 5)
    # person 1, the walker (4) and the runner (5) are in scan 5: one copy from each of scans 1..4;
    # car is no thing class of the official list; the pole left the view (absent from scan 5).
    assert set(zip(fused.semantic.tolist(), fused.instance.tolist(), strict=True)) == {
        (PERSON, 1),
        (MOVING_PERSON, 4),
        (PERSON, 5),
    }
    for raw_id, instance_id in [(PERSON, 1), (MOVING_PERSON, 4), (PERSON, 5)]:
        now = _points_of(sequence, 5, raw_id, instance_id)[:, :3]
        copies = np.split(_fused_instance(fused, raw_id, instance_id)[:, :3], 4)
        for j, copy in zip(range(1, 5), copies, strict=True):
            np.testing.assert_allclose(copy.mean(axis=0), now.mean(axis=0), atol=1e-4)
            # translated only: the copy keeps the shape it has in scan j's own frame (no rotation)
            in_scan_j = _points_of(sequence, j, raw_id, instance_id)[:, :3]
            np.testing.assert_allclose(copy - copy.mean(0), in_scan_j - in_scan_j.mean(0), atol=1e-4)


def test_official_fusion_starts_at_the_fifth_scan(sequence):
    fuser = _official_fuser()
    assert [len(fuser.fuse(sequence, j)) for j in range(4)] == [0, 0, 0, 0]
    assert fuser.neighbours(4, NUM_SCANS) == [0, 1, 2, 3]
    assert len(fuser.fuse(sequence, 4)) > 0
    with pytest.raises(ValueError, match="placement"):
        MultiScanFuser(placement="icp")


def test_neighbours_stay_inside_their_drive():
    drives = np.array([0, 0, 0, 1, 1, 1])
    fuser = MultiScanFuser(k_previous=2, k_next=2)
    assert fuser.neighbours(2, 6, drives) == [0, 1]  # scans 3 and 4 are another street
    assert fuser.neighbours(3, 6, drives) == [4, 5]  # first of its drive: nothing before it
    assert fuser.neighbours(4, 6, drives) == [3, 5]
    assert fuser.neighbours(4, 6) == [2, 3, 5]  # without drives: one recording
    official = MultiScanFuser(k_previous=2, full_history_only=True)
    assert official.neighbours(4, 6, drives) == []  # one predecessor in its drive, two needed
    assert official.neighbours(5, 6, drives) == [3, 4]


def test_fusion_does_not_cross_a_break_in_the_recording(sequence, tmp_path):
    """The same six scans, but the recording breaks off after scan 2 (a minute's gap in times.txt)."""
    seq_dir = tmp_path / "sequences" / "00"
    seq_dir.mkdir(parents=True)
    for name in ("velodyne", "labels", "poses.txt", "calib.txt"):
        (seq_dir / name).symlink_to(sequence.path / name)
    write_times(seq_dir / "times.txt", np.array([0.0, 0.1, 0.2, 60.2, 60.3, 60.4]))
    broken = Sequence(tmp_path, "00")
    person_size = len(_points_of(sequence, 0, PERSON, 1))
    fuser = MultiScanFuser(k_previous=4, moving="drop")
    assert len(fuser.fuse(sequence, 5)) == 4 * person_size  # one recording: scans 1..4
    assert len(fuser.fuse(broken, 5)) == 2 * person_size  # scans 3 and 4 only
    assert len(fuser.fuse(broken, 3)) == 0  # first scan after the break
