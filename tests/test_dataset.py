"""Dataset over a SemanticKITTI-layout folder: label mapping, collation, augmentation, fused points."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from m2s_training.data.dataset import (
    AugmentConfig,
    SemanticKittiDataset,
    augment,
    collate,
    dropout_mask,
    make_loader,
    paste_sector,
)
from m2s_training.data.semantic_kitti import KittiFormatError, write_calib, write_labels, write_poses, write_scan

RAW_IDS = np.array([40, 10, 252, 0, 81], dtype=np.uint16)  # road, car, moving-car, unlabeled, traffic-sign
TRAIN_IDS = np.array([9, 1, 1, 0, 19])


def write_sequence(root, name="00", sizes=(50, 70, 30), labels=True):
    seq = root / "sequences" / name
    rng = np.random.default_rng(int(name))
    for index, size in enumerate(sizes):
        points = np.concatenate([rng.uniform(-20, 20, (size, 3)), rng.uniform(0, 1, (size, 1))], axis=1)
        write_scan(seq / "velodyne" / f"{index:06d}.bin", points.astype(np.float32))
        if labels:
            write_labels(seq / "labels" / f"{index:06d}.label", RAW_IDS[np.arange(size) % 5], np.arange(size) % 3)
    write_poses(seq / "poses.txt", np.tile(np.eye(4), (len(sizes), 1, 1)))
    write_calib(seq / "calib.txt", np.eye(4))
    return seq


def test_sample_maps_raw_ids_to_training_ids(tmp_path):
    write_sequence(tmp_path)
    sample = SemanticKittiDataset(tmp_path, ["00"])[1]
    assert sample.points.shape == (70, 4) and sample.points.dtype == np.float32
    np.testing.assert_array_equal(sample.labels, TRAIN_IDS[np.arange(70) % 5])
    np.testing.assert_array_equal(sample.instance, np.arange(70) % 3)
    assert not sample.is_fused.any()
    assert sample.frame == ("00", "000001")


def test_collate_concatenates_clouds_of_different_sizes(tmp_path):
    write_sequence(tmp_path)
    dataset = SemanticKittiDataset(tmp_path, ["00"])
    batch = collate([dataset[0], dataset[1], dataset[2]])
    assert batch.points.shape == (150, 4) and batch.batch_size == 3
    assert batch.labels.dtype == torch.int64 and batch.is_fused.dtype == torch.bool
    np.testing.assert_array_equal(torch.bincount(batch.batch_index).numpy(), [50, 70, 30])
    torch.testing.assert_close(batch.points[50:120], torch.from_numpy(dataset[1].points))
    assert batch.frames == [("00", "000000"), ("00", "000001"), ("00", "000002")]


def test_augmentation_is_a_rotation_flip_scale_keeping_order_and_labels(tmp_path):
    write_sequence(tmp_path)
    plain = SemanticKittiDataset(tmp_path, ["00"])[1]
    config = AugmentConfig(rotate=True, flip=True, scale=(0.9, 1.1), jitter_std=0.0)
    augmented = SemanticKittiDataset(tmp_path, ["00"], augment=config, seed=3)[1]
    np.testing.assert_array_equal(augmented.labels, plain.labels)
    np.testing.assert_array_equal(augmented.points[:, 3], plain.points[:, 3])  # remission untouched
    # every point keeps its place in the array: all distances from the origin scale by one factor
    factor = np.linalg.norm(augmented.points[:, :3], axis=1) / np.linalg.norm(plain.points[:, :3], axis=1)
    assert 0.9 <= factor[0] <= 1.1
    np.testing.assert_allclose(factor, factor[0], rtol=1e-5)
    np.testing.assert_allclose(augmented.points[:, 2], plain.points[:, 2] * factor[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(augmented.points[:, :2], plain.points[:, :2] * factor[0])  # rotated / flipped


def test_augmentation_draws_depend_on_seed_epoch_and_index_only(tmp_path):
    write_sequence(tmp_path)
    dataset = SemanticKittiDataset(tmp_path, ["00"], augment=AugmentConfig(), seed=1)
    first = dataset[0].points
    np.testing.assert_array_equal(dataset[0].points, first)  # same draw for the same (seed, epoch, index)
    dataset.set_epoch(1)
    assert not np.allclose(dataset[0].points, first)


def test_jitter_has_the_configured_spread():
    points = np.zeros((20000, 4), dtype=np.float32)
    config = AugmentConfig(rotate=False, flip=False, scale=(1.0, 1.0), jitter_std=0.05)
    moved = augment(points, config, np.random.default_rng(0))
    assert moved[:, :3].std() == pytest.approx(0.05, rel=0.05)


def test_fused_points_are_appended_and_removed_by_student_view(tmp_path):
    write_sequence(tmp_path)
    fused = SimpleNamespace(
        points=np.ones((4, 4), np.float32), semantic=np.array([30, 30, 80, 254], np.uint16), instance=np.full(4, 7)
    )
    fuser = SimpleNamespace(fuse=lambda sequence, index: fused)
    dataset = SemanticKittiDataset(tmp_path, ["00"], fuser=fuser)
    sample = dataset[0]
    assert sample.points.shape == (54, 4)
    np.testing.assert_array_equal(sample.is_fused, np.arange(54) >= 50)
    np.testing.assert_array_equal(sample.labels[50:], [6, 6, 18, 6])  # person, person, pole, moving-person
    batch = collate([sample, dataset[2]])
    student = batch.student_view()
    assert student.points.shape == (80, 4) and not student.is_fused.any()
    np.testing.assert_array_equal(torch.bincount(student.batch_index).numpy(), [50, 30])
    torch.testing.assert_close(student.labels[:50], torch.from_numpy(dataset[0].labels[:50]))


def test_label_counts_and_max_scans(tmp_path):
    write_sequence(tmp_path, "00", sizes=(10, 10, 10, 10, 10))
    write_sequence(tmp_path, "01", sizes=(5,))
    dataset = SemanticKittiDataset(tmp_path, ["00", "01"], max_scans=3)
    # 6 scans, 3 wanted: positions linspace(0, 5, 3) = 0, 2.5, 5 → 0, 2 (round half to even), 5
    frames = [dataset[k].frame for k in range(len(dataset))]
    assert frames == [("00", "000000"), ("00", "000002"), ("01", "000000")]
    counts = dataset.label_counts()
    expected = np.bincount(TRAIN_IDS[np.arange(10) % 5], minlength=20) * 2 + np.bincount(
        TRAIN_IDS[np.arange(5) % 5], minlength=20
    )
    np.testing.assert_array_equal(counts, expected)


def test_missing_labels_or_sequence_is_a_clear_error(tmp_path):
    write_sequence(tmp_path, "00", labels=False)
    with pytest.raises(KittiFormatError, match="labels"):
        SemanticKittiDataset(tmp_path, ["00"])
    with pytest.raises(KittiFormatError, match="does not exist"):
        SemanticKittiDataset(tmp_path, ["05"])


def test_max_points_keeps_a_random_subset_in_order_with_its_labels(tmp_path):
    write_sequence(tmp_path)
    full = SemanticKittiDataset(tmp_path, ["00"])[1]
    sample = SemanticKittiDataset(tmp_path, ["00"], max_points=20, seed=5)[1]
    assert sample.points.shape == (20, 4)
    rows = [int(np.flatnonzero((full.points == p).all(axis=1))[0]) for p in sample.points]
    assert rows == sorted(set(rows))  # distinct points of the scan, scan order kept
    np.testing.assert_array_equal(sample.labels, full.labels[rows])
    np.testing.assert_array_equal(sample.instance, full.instance[rows])


def test_worker_processes_load_the_same_batches_as_the_main_process(tmp_path):
    write_sequence(tmp_path, sizes=(10, 20, 30, 40))
    dataset = SemanticKittiDataset(tmp_path, ["00"], augment=AugmentConfig(), seed=2)
    dataset.set_epoch(3)
    order = [3, 0, 2, 1]
    in_main = list(make_loader(dataset, 2, order, num_workers=0))
    in_workers = list(make_loader(dataset, 2, order, num_workers=2))
    assert [b.frames for b in in_workers] == [
        [("00", "000003"), ("00", "000000")],
        [("00", "000002"), ("00", "000001")],
    ]
    for a, b in zip(in_main, in_workers, strict=True):
        torch.testing.assert_close(a.points, b.points)
        torch.testing.assert_close(a.labels, b.labels)


# --- sim-to-real augmentations ------------------------------------------------------------------

PLAIN = dict(rotate=False, flip=False, scale=(1.0, 1.0), jitter_std=0.0)


def _cloud(n=2000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-30, 30, (n, 3)) * np.array([1, 1, 0.1])
    remission = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.05, 0.9, n))
    return np.concatenate([xyz, remission[:, None]], axis=1).astype(np.float32)


def test_tilt_and_height_shift_move_the_cloud_rigidly():
    points = _cloud()
    moved = augment(points, AugmentConfig(**PLAIN, z_shift_std=0.2, tilt_std_deg=3.0), np.random.default_rng(1))
    # pairwise distances survive a rotation plus a shift; the heights do change
    a, b = points[:, :3], moved[:, :3]
    np.testing.assert_allclose(np.linalg.norm(a[1:] - a[0], axis=1), np.linalg.norm(b[1:] - b[0], axis=1), atol=1e-3)
    assert np.abs(a[:, 2] - b[:, 2]).max() > 0.05
    np.testing.assert_array_equal(moved[:, 3], points[:, 3])  # no remission settings: remission untouched


def test_ground_warp_bends_a_flat_road_smoothly_and_leaves_the_sensor_where_it_is():
    road = np.zeros((2001, 4), np.float32)
    road[:, 0] = np.linspace(-50.0, 50.0, 2001)  # a flat line of road through the sensor, 5 cm apart
    road[1000, 0] = 0.0
    bent = augment(road, AugmentConfig(**PLAIN, ground_warp=0.2), np.random.default_rng(4))
    z = bent[:, 2].astype(np.float64)
    assert abs(z[1000]) < 1e-6  # zero at the sensor: the mount height stays as drawn
    assert 0.05 < np.abs(z).max() <= 4 * 0.2  # two waves of at most 0.2 m each (peak to peak 4 × 0.2)
    # smooth: a 60-m wave of 0.2 m slopes by at most 2π·0.2/15 per metre, so 5 cm steps rise < 1.1 cm
    assert np.abs(np.diff(z)).max() < 2 * 2 * np.pi * 0.2 / 15.0 * 0.05 + 1e-6
    np.testing.assert_array_equal(bent[:, :2], road[:, :2])  # only the height changes


def test_range_noise_moves_points_along_their_beams_by_a_sigma_drawn_per_scan():
    points = _cloud(5000)
    sigmas = []
    for seed in range(40):
        moved = augment(points, AugmentConfig(**PLAIN, range_noise=0.05), np.random.default_rng(seed))
        a, b = points[:, :3].astype(np.float64), moved[:, :3].astype(np.float64)
        # along the beam: the direction from the sensor stays, only the distance changes
        np.testing.assert_allclose(np.cross(a, b) / np.linalg.norm(a, axis=1, keepdims=True) ** 2, 0.0, atol=1e-5)
        sigmas.append(np.std(np.linalg.norm(b, axis=1) - np.linalg.norm(a, axis=1)))
        np.testing.assert_array_equal(moved[:, 3], points[:, 3])
    sigmas = np.array(sigmas)
    # σ ~ U(0, 5 cm) per scan: all within it, spread over it (mean 2.5 cm)
    assert sigmas.max() <= 0.05 * 1.05 and sigmas.min() < 0.01 and sigmas.max() > 0.04
    assert 0.018 < sigmas.mean() < 0.032


def test_remission_gain_and_noise_keep_zero_returns_zero_and_stay_in_range():
    points = _cloud()
    config = AugmentConfig(**PLAIN, remission_scale=(1.5, 1.5), remission_noise=0.0)
    out = augment(points, config, np.random.default_rng(0))
    np.testing.assert_allclose(out[:, 3], np.clip(points[:, 3] * 1.5, 0, 1), rtol=1e-6)
    noisy = augment(points, AugmentConfig(**PLAIN, remission_noise=0.1), np.random.default_rng(0))
    zero = points[:, 3] == 0
    assert np.all(noisy[zero, 3] == 0) and not np.allclose(noisy[~zero, 3], points[~zero, 3])
    assert noisy[:, 3].min() >= 0 and noisy[:, 3].max() <= 1


def test_remission_falloff_dims_far_points_as_a_real_hdl64e_does():
    # points on the x axis at 10, 20, 40 and 80 m, remission 0.4; knee 20 m, power 1, and zeros so
    # far away (1 km) that none is drawn: 10 and 20 m keep 0.4, 40 m gets 0.4 * 20/40, 80 m 0.4 * 20/80
    points = np.array([[10, 0, 0, 0.4], [0, 20, 0, 0.4], [-40, 0, 0, 0.4], [0, 0, 80, 0.4]], np.float32)
    dim = dict(remission_falloff=1.0, falloff_knee=(20.0, 20.0), falloff_power=(1.0, 1.0))
    out = augment(points, AugmentConfig(**PLAIN, **dim, falloff_zero_range=(1000.0, 1000.0)), np.random.default_rng(0))
    np.testing.assert_allclose(out[:, 3], [0.4, 0.4, 0.2, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(out[:, :3], points[:, :3])
    # zeroed with probability 1 / (1 + exp(-(r - zero_range) / 9)): a half at r = zero_range = 50 m,
    # 1 / (1 + e^2) = 0.119 at 32 m; the rest keep the range gain
    far = np.tile(np.array([[50, 0, 0, 0.4], [0, 32, 0, 0.4]], np.float32), (20000, 1))
    out = augment(far, AugmentConfig(**PLAIN, **dim, falloff_zero_range=(50.0, 50.0)), np.random.default_rng(1))
    assert abs((out[0::2, 3] == 0).mean() - 0.5) < 0.015
    assert abs((out[1::2, 3] == 0).mean() - 1 / (1 + np.exp(2.0))) < 0.01
    np.testing.assert_allclose(np.unique(out[1::2, 3]), [0.0, 0.4 * 20 / 32], rtol=1e-6)
    # off (the default), or for the scans not drawn, remission is untouched
    plain = augment(far, AugmentConfig(**PLAIN), np.random.default_rng(1))
    np.testing.assert_array_equal(plain[:, 3], far[:, 3])
    sometimes = AugmentConfig(**PLAIN, **{**dim, "remission_falloff": 0.3})
    dimmed = [augment(far[:2], sometimes, np.random.default_rng(seed)) for seed in range(400)]
    share = np.mean([d[1, 3] != 0.4 for d in dimmed])  # the 32-m point changes whenever the scan is drawn
    assert 0.23 < share < 0.37


def test_zero_fill_gives_every_zero_the_value_of_a_lit_return_in_a_share_of_the_scans():
    # remission 0, 0.2, 0, 0.4, 0.6, 0 at distinct places: the three zeros take values among the lit
    # 0.2, 0.4, 0.6; the lit returns and every coordinate stay as they were
    points = np.array(
        [[5, 0, 0, 0], [6, 0, 0, 0.2], [7, 0, 0, 0], [8, 0, 0, 0.4], [9, 0, 0, 0.6], [10, 0, 0, 0]], np.float32
    )
    lit = points[:, 3] > 0
    for seed in range(20):
        out = augment(points, AugmentConfig(**PLAIN, zero_fill=1.0), np.random.default_rng(seed))
        assert set(out[~lit, 3].tolist()) <= {np.float32(0.2), np.float32(0.4), np.float32(0.6)}
        np.testing.assert_array_equal(out[lit], points[lit])
        np.testing.assert_array_equal(out[:, :3], points[:, :3])
    # all drawn values over many scans: each lit value shows up (a random lit return, not one fixed value)
    drawn = {
        v
        for seed in range(50)
        for v in augment(points, AugmentConfig(**PLAIN, zero_fill=1.0), np.random.default_rng(seed))[~lit, 3].tolist()
    }
    assert len(drawn) == 3
    # a scan with nothing lit keeps its zeros; off (the default) changes nothing
    dark = points.copy()
    dark[:, 3] = 0
    np.testing.assert_array_equal(augment(dark, AugmentConfig(**PLAIN, zero_fill=1.0), np.random.default_rng(0)), dark)
    np.testing.assert_array_equal(augment(points, AugmentConfig(**PLAIN), np.random.default_rng(0)), points)
    # a share of the scans: with 0.5, about half of them lose their zeros
    half = [augment(points, AugmentConfig(**PLAIN, zero_fill=0.5), np.random.default_rng(seed)) for seed in range(400)]
    share = np.mean([(h[:, 3] == 0).sum() == 0 for h in half])
    assert 0.42 < share < 0.58


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"zero_fill": -0.1}, "zero_fill is a share"),
        ({"remission_falloff": 1.5}, "remission_falloff is a share"),
        ({"falloff_knee": (30.0, 15.0)}, "falloff_knee: expected 0 < low <= high"),
        ({"falloff_power": (0.0, 1.0)}, "falloff_power: expected 0 < low <= high"),
    ],
)
def test_remission_falloff_settings_out_of_range_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**bad)


def test_beam_dropout_drops_whole_elevation_bands():
    points = _cloud(5000)
    keep = dropout_mask(points, AugmentConfig(beam_dropout=0.5), np.random.default_rng(3))
    band = np.floor(np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1]))) / 0.4)
    for b in np.unique(band):
        assert len(np.unique(keep[band == b])) == 1  # a band is kept or lost as a whole
    assert 0.2 < keep.mean() < 0.8
    some = dropout_mask(points, AugmentConfig(point_dropout=0.5), np.random.default_rng(3))
    assert 0.5 <= some.mean() < 1.0


def test_paste_sector_takes_one_sector_from_the_other_scan_with_its_labels():
    target, source = _cloud(3000, 1), _cloud(3000, 2)
    t = (target, np.full(len(target), 9), np.zeros(len(target), np.int64))
    s = (source, np.full(len(source), 1), np.ones(len(source), np.int64))
    points, labels, instance = paste_sector(t, s, np.random.default_rng(5))
    from_source = labels == 1
    assert 0 < from_source.sum() < len(source) and np.all(instance[from_source] == 1)
    # the pasted points and the kept points lie in complementary azimuth ranges
    az = np.arctan2(points[:, 1], points[:, 0])
    inside_max, inside_min = az[from_source].max(), az[from_source].min()
    assert inside_max - inside_min <= np.pi + 1e-6 or np.ptp(np.mod(az[from_source], 2 * np.pi)) <= np.pi + 1e-6
    assert len(points) == len(labels) == len(instance)
    np.testing.assert_array_equal(points[from_source], source[np.isin(source[:, 0], points[from_source, 0])])


def test_dataset_mixing_and_dropout_keep_points_and_labels_aligned(tmp_path):
    write_sequence(tmp_path, "00", sizes=(400, 500, 300))
    config = AugmentConfig(**PLAIN, mix_prob=1.0, point_dropout=0.5, beam_dropout=0.2)
    sample = SemanticKittiDataset(tmp_path, ["00"], augment=config, seed=4)[0]
    assert len(sample.points) == len(sample.labels) == len(sample.instance) == len(sample.is_fused)
    # every point still carries the label it was written with (labels cycle with the point's index)
    originals = {}
    for index in range(3):
        pts = np.fromfile(tmp_path / "sequences" / "00" / "velodyne" / f"{index:06d}.bin", np.float32).reshape(-1, 4)
        for i, p in enumerate(pts):
            originals[p[0].item(), p[1].item()] = TRAIN_IDS[i % 5]
    assert all(
        originals[p[0].item(), p[1].item()] == label for p, label in zip(sample.points, sample.labels, strict=True)
    )
