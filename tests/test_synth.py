"""Synthetic sequences, read back through the project's SemanticKITTI reader."""

from __future__ import annotations

import numpy as np
import pytest

from m2s_perception.labels import load_label_map
from m2s_training.data.semantic_kitti import Sequence, read_calib
from m2s_training.synth import TR_LIDAR_TO_CAMERA, SequenceSimulator, generate, get_preset
from m2s_training.synth.cli import main as synth_main
from m2s_training.synth.generator import street_sizes
from m2s_training.synth.mesh import raw_ids

LABELS = load_label_map()
MOVING_RAW = {252, 253, 254, 255, 256, 257, 258, 259}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    paths = generate(root, ["00", "8"], preset="tiny", seed=0)
    return root, paths


def _world_points(frame) -> np.ndarray:
    return frame.points[:, :3] @ frame.pose[:3, :3].T + frame.pose[:3, 3]


def test_layout_and_counts(tiny):
    root, paths = tiny
    assert paths == [root / "sequences" / "00", root / "sequences" / "08"]
    tiny_preset = get_preset("tiny")
    sequence = Sequence(root, "08")
    assert len(sequence) == tiny_preset.scans
    np.testing.assert_allclose(sequence.times, np.arange(tiny_preset.scans) * 0.1)
    np.testing.assert_allclose(read_calib(sequence.path / "calib.txt")["Tr"], TR_LIDAR_TO_CAMERA, atol=1e-8)
    rays = tiny_preset.sensor.beams * tiny_preset.sensor.azimuth_steps
    for index in range(len(sequence)):
        frame = sequence.frame(index)  # the reader checks that labels and points have the same count
        assert frame.points.dtype == np.float32 and frame.points.shape[1] == 4
        assert 0.5 * rays < len(frame.points) <= rays
        assert np.isfinite(frame.points).all()
        assert frame.points[:, 3].min() >= 0.0 and frame.points[:, 3].max() <= 1.0
        ranges = np.linalg.norm(frame.points[:, :3], axis=1)
        assert ranges.min() >= tiny_preset.sensor.min_range - 0.2
        assert ranges.max() <= tiny_preset.sensor.max_range
        assert np.all(LABELS.to_train(frame.semantic) > 0), "every point has a training class"


def test_all_19_classes_over_a_tiny_sequence(tiny):
    root, _ = tiny
    for name in ("00", "08"):
        sequence = Sequence(root, name)
        seen = set()
        for index in range(len(sequence)):
            seen |= set(np.unique(LABELS.to_train(sequence.frame(index).semantic)).tolist())
        assert seen == set(range(1, 20)), f"missing: {[LABELS.class_names[i] for i in set(range(1, 20)) - seen]}"


def test_instances_persist_and_movers_move(tiny):
    root, _ = tiny
    sequence = Sequence(root, "00")
    class_of: dict[int, int] = {}
    centroids: dict[int, dict[int, np.ndarray]] = {}
    for index in range(len(sequence)):
        frame = sequence.frame(index)
        world = _world_points(frame)
        stuff = np.isin(frame.semantic, [raw_ids()[n] for n in ("road", "building", "vegetation", "terrain")])
        assert np.all(frame.instance[stuff] == 0), "stuff classes carry no instance id"
        for instance in np.unique(frame.instance[frame.instance > 0]):
            mask = frame.instance == instance
            semantic = np.unique(frame.semantic[mask])
            assert len(semantic) == 1, f"instance {instance} has several classes {semantic}"
            assert class_of.setdefault(int(instance), int(semantic[0])) == semantic[0], "instance changed class"
            centroids.setdefault(int(instance), {})[index] = world[mask].mean(axis=0)
    moving = {i for i, raw in class_of.items() if raw in MOVING_RAW}
    assert {LABELS.to_train(np.array([class_of[i]]))[0] for i in moving} >= {1, 6, 7, 8}
    seen_twice = [i for i in moving if len(centroids[i]) >= 2]
    assert seen_twice
    for instance in seen_twice:
        first, last = min(centroids[instance]), max(centroids[instance])
        # Slowest mover: a pedestrian at >= 1 m/s, i.e. >= 0.1 m per scan (the centroid also shifts
        # with the visible side, so only demand half of it).
        shift = np.linalg.norm(centroids[instance][last][:2] - centroids[instance][first][:2])
        assert shift > 0.05 * (last - first), f"moving instance {instance} stayed put"


def test_static_poles_land_on_the_same_place_in_the_world(tiny):
    """Poles are thin (radius <= 9 cm): with correct poses and Tr their world xy-centroid is fixed."""
    root, _ = tiny
    sequence = Sequence(root, "00")
    per_instance: dict[int, list[np.ndarray]] = {}
    for index in range(len(sequence)):
        frame = sequence.frame(index)
        world = _world_points(frame)
        poles = frame.semantic == raw_ids()["pole"]
        for instance in np.unique(frame.instance[poles]):
            mask = poles & (frame.instance == instance)
            if mask.sum() >= 3:
                per_instance.setdefault(int(instance), []).append(world[mask, :2].mean(axis=0))
    tracked = {i: np.array(c) for i, c in per_instance.items() if len(c) >= 3}
    assert tracked, "no pole seen in three scans"
    for instance, xy in tracked.items():
        spread = np.linalg.norm(xy - xy.mean(axis=0), axis=1).max()
        assert spread < 0.1, f"pole {instance} wanders {spread:.3f} m in the world frame"
    # The ego moves ~0.8 m per scan, so the same poles in the LiDAR frame do move.
    assert np.linalg.norm(sequence.poses[-1][:3, 3] - sequence.poses[0][:3, 3]) > 5.0


def test_first_pose_is_identity_and_tr_is_not(tiny):
    root, _ = tiny
    sequence = Sequence(root, "00")
    np.testing.assert_allclose(sequence.poses[0], np.eye(4), atol=1e-8)
    assert not np.allclose(sequence.calib["Tr"], np.eye(4))


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    root, _ = tiny
    generate(tmp_path / "again", ["00"], seed=0)
    generate(tmp_path / "other", ["00"], seed=1)
    for rel in ("velodyne/000004.bin", "labels/000004.label", "poses.txt", "calib.txt", "times.txt"):
        original = (root / "sequences/00" / rel).read_bytes()
        assert (tmp_path / "again/sequences/00" / rel).read_bytes() == original, rel
    for rel in ("velodyne/000004.bin", "labels/000004.label"):
        assert (tmp_path / "other/sequences/00" / rel).read_bytes() != (root / "sequences/00" / rel).read_bytes()
    # Sequences of one seed differ from each other too.
    assert (root / "sequences/00/velodyne/000000.bin").read_bytes() != (
        root / "sequences/08/velodyne/000000.bin"
    ).read_bytes()


def test_scans_argument_and_bad_input(tmp_path):
    generate(tmp_path, ["3"], scans=4)
    generate(tmp_path, ["3"], scans=2)  # regenerating with fewer scans leaves no stale ones
    assert len(Sequence(tmp_path, "03")) == 2
    assert len(list((tmp_path / "sequences/03/labels").iterdir())) == 2
    with pytest.raises(ValueError, match="unknown preset"):
        generate(tmp_path, ["00"], preset="huge")
    with pytest.raises(ValueError, match="sequence"):
        generate(tmp_path, ["abc"])
    with pytest.raises(ValueError, match="scans"):
        generate(tmp_path, ["00"], scans=0)


def test_cli_writes_summary_and_preview(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--sequences", "02", "--scans", "3", "--preview", str(tmp_path / "p.png")]
    assert synth_main(argv) == 0
    out = capsys.readouterr().out
    assert "3 scans" in out and "points/scan" in out
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(Sequence(tmp_path, "02")) == 3


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    for argv in (["--sequences", "x1"], ["--scans", "0"], ["--preset", "huge"]):
        with pytest.raises(SystemExit) as exit_info:
            synth_main(["--out", str(tmp_path), *argv])
        assert exit_info.value.code == 2
    assert "sequence must be a number" in capsys.readouterr().err


def test_set_changes_preset_and_sensor_fields_and_rejects_unknown_or_mistyped_ones(tmp_path, capsys):
    from m2s_training.synth.presets import with_settings

    preset = with_settings(get_preset("kitti"), ["porous_fences=true", "skewed_junctions=0.5", "sensor.dropout=0.1"])
    assert preset.porous_fences is True and preset.skewed_junctions == 0.5 and preset.sensor.dropout == 0.1
    assert preset.sensor.azimuth_steps == get_preset("kitti").sensor.azimuth_steps  # the rest as the preset's
    # tiny loses 20 % of its returns instead of 3 % (SensorConfig's default): 0.80 / 0.97 = 0.825 of the points
    base = synth_main(["--out", str(tmp_path / "a"), "--scans", "2"])
    dropped = synth_main(["--out", str(tmp_path / "b"), "--scans", "2", "--set", "sensor.dropout=0.2"])
    assert base == dropped == 0
    sizes = [(tmp_path / r / "sequences/00/velodyne/000001.bin").stat().st_size for r in ("a", "b")]
    assert 0.80 < sizes[1] / sizes[0] < 0.85
    refused = [
        ("porous=1", "unknown keys porous"),
        ("sensor.dropout=abc", "expected a number"),
        ("kerb_height=[0.2,0.1]", "kerb_height must be [low, high] with 0 <= low <= high, got [0.2, 0.1]"),
        ("lawn_drop=[0.1,-0.1]", "lawn_drop must be"),
        ("hedge_height=[1.5,0.5]", "hedge_height must be [low, high]"),
        ("paved_to_boundary=1.5", "paved_to_boundary is a share of the front plots, 0-1, got 1.5"),
    ]
    for bad, message in refused:
        with pytest.raises(SystemExit) as exit_info:
            synth_main(["--out", str(tmp_path / "c"), "--set", bad])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_default_preset_is_kitti_like():
    sim = SequenceSimulator(get_preset("hdl64"), scans=2, seed=0, sequence="00")
    scan = sim.scan(1)
    assert 100_000 <= len(scan.points) <= 130_000
    assert set(np.unique(LABELS.to_train(scan.semantic)).tolist()) >= {1, 9, 11, 13, 15, 17}
    assert 0.05 < scan.points[:, 3].mean() < 0.6


def test_stride_keeps_every_nth_sweep(tmp_path):
    """--stride 3: scans 0.3 s apart, so the ego (8 m/s in the tiny preset) moves 2.4 m between them."""
    assert synth_main(["--out", str(tmp_path), "--sequences", "00", "--scans", "4", "--stride", "3"]) == 0
    sequence = Sequence(tmp_path, "00")
    times = np.loadtxt(tmp_path / "sequences" / "00" / "times.txt")
    np.testing.assert_allclose(np.diff(times), 0.3, atol=1e-6)
    steps = np.linalg.norm(np.diff(np.stack([p[:3, 3] for p in sequence.poses]), axis=0), axis=1)
    np.testing.assert_allclose(steps, 2.4, atol=0.05)  # the lane weave adds a few cm
    with pytest.raises(SystemExit):
        synth_main(["--out", str(tmp_path), "--stride", "0"])


def test_streets_split_a_sequence_into_worlds_with_a_break_between(tmp_path, capsys):
    """--scans 5 --streets 2: streets of 3 and 2 scans, each starting its own poses, a minute apart."""
    argv = ["--out", str(tmp_path / "two"), "--sequences", "00", "--scans", "5", "--streets", "2"]
    assert synth_main(argv) == 0
    assert "5 scans in 2 streets" in capsys.readouterr().out
    sequence = Sequence(tmp_path / "two", "00")
    assert len(sequence) == 5
    times = np.loadtxt(sequence.path / "times.txt")
    np.testing.assert_allclose(times, [0.0, 0.1, 0.2, 60.2, 60.3], atol=1e-6)
    assert list(sequence.drives) == [0, 0, 0, 1, 1]
    np.testing.assert_allclose(sequence.poses[0], np.eye(4), atol=1e-8)
    np.testing.assert_allclose(sequence.poses[3], np.eye(4), atol=1e-8)
    assert sequence.poses[2][0, 3] > 1.0  # the car drove down street 0 before the break

    # Street 0 is the one-street sequence of its length (same seed, same bytes); street 1 is another world.
    assert synth_main(["--out", str(tmp_path / "one"), "--sequences", "00", "--scans", "3"]) == 0
    for j in range(3):
        for rel in (f"velodyne/{j:06d}.bin", f"labels/{j:06d}.label"):
            assert (sequence.path / rel).read_bytes() == (tmp_path / "one/sequences/00" / rel).read_bytes()
    # A street of 2 scans drawn from street 0's seeds would equal this one-street sequence: street 1 must not.
    assert synth_main(["--out", str(tmp_path / "short"), "--sequences", "00", "--scans", "2"]) == 0
    for j in range(2):
        short = (tmp_path / "short/sequences/00/velodyne" / f"{j:06d}.bin").read_bytes()
        assert (sequence.path / "velodyne" / f"{3 + j:06d}.bin").read_bytes() != short


def test_streets_one_is_the_default_and_streets_of_one_scan_are_refused(tmp_path, capsys):
    assert synth_main(["--out", str(tmp_path / "a"), "--sequences", "00", "--scans", "3"]) == 0
    assert synth_main(["--out", str(tmp_path / "b"), "--sequences", "00", "--scans", "3", "--streets", "1"]) == 0
    for rel in ("velodyne/000002.bin", "labels/000002.label", "poses.txt", "times.txt"):
        assert (tmp_path / "a/sequences/00" / rel).read_bytes() == (tmp_path / "b/sequences/00" / rel).read_bytes()
    # Streets of one scan would leave no step within a street to tell the breaks from: refused.
    for streets in ("2", "4", "0"):
        with pytest.raises(SystemExit) as exit_info:
            synth_main(["--out", str(tmp_path / "c"), "--scans", "3", "--streets", streets])
        assert exit_info.value.code == 2
    assert (
        "--streets 2: 2 streets need at least 4 scans (two per street), got 3 per sequence" in capsys.readouterr().err
    )
    assert not (tmp_path / "c").exists()
    assert street_sizes(7, 3) == [3, 2, 2] and street_sizes(1, 1) == [1]
    with pytest.raises(ValueError, match="two per street"):
        street_sizes(5, 3)
