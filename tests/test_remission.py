"""Remission on one scale per scan (m2s_perception/remission.py), in training samples and at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_dataset import write_sequence
from test_models import SMALL_GRID

from m2s_perception.inference import Segmenter
from m2s_perception.models import ModelConfig, build_model
from m2s_perception.remission import scale_remission
from m2s_training.checkpoint import save_checkpoint
from m2s_training.data.dataset import AugmentConfig, SemanticKittiDataset


def scan(remission: list[float]) -> np.ndarray:
    n = len(remission)
    xyz = np.stack([np.arange(n), np.ones(n), -np.ones(n)], axis=1)
    return np.concatenate([xyz, np.array(remission)[:, None]], axis=1).astype(np.float32)


def test_the_lit_median_becomes_the_reference_and_zeros_stay_zero():
    # 40 lit returns 0.01 ... 0.40 (median 0.205) and 10 zeros: each lit value times 0.28 / 0.205
    lit = [round(0.01 * k, 2) for k in range(1, 41)]
    points = scan(lit + [0.0] * 10)
    before = points.copy()
    out = scale_remission(points, 0.28)
    np.testing.assert_array_equal(points, before)  # the input is not changed
    np.testing.assert_allclose(out[:40, 3], np.array(lit) * 0.28 / 0.205, rtol=1e-6)
    assert np.all(out[40:, 3] == 0.0)
    np.testing.assert_array_equal(out[:, :3], points[:, :3])
    assert np.median(out[:40, 3]) == pytest.approx(0.28)


def test_a_scan_with_too_few_lit_returns_is_left_as_it_is():
    points = scan([0.3] * 31 + [0.0] * 100)  # 31 lit: below the 32 a median is trusted with
    np.testing.assert_array_equal(scale_remission(points, 0.28), points)


def test_training_samples_reach_the_reference_whatever_scale_the_augmentation_drew(tmp_path):
    write_sequence(tmp_path, sizes=(80, 80))
    scaled = AugmentConfig(
        rotate=False, flip=False, scale=(1.0, 1.0), jitter_std=0.0, remission_scale=(0.5, 0.95)
    )  # no clipping at 1
    raw = SemanticKittiDataset(tmp_path, ["00"], augment=scaled, seed=1)[1].points[:, 3]
    samples = [
        SemanticKittiDataset(tmp_path, ["00"], augment=scaled, seed=seed, remission_reference=0.6)[1].points[:, 3]
        for seed in (1, 2)
    ]
    plain = SemanticKittiDataset(tmp_path, ["00"], remission_reference=0.6)[1].points[:, 3]
    assert np.median(raw[raw > 0]) != pytest.approx(0.6, abs=0.01)  # the augmentation did scale it
    for sample in samples:
        assert np.median(sample[sample > 0]) == pytest.approx(0.6, rel=1e-5)
        np.testing.assert_allclose(sample, plain, rtol=1e-5)  # the draw no longer shows


def test_the_segmenter_gives_the_model_the_same_input_at_any_sensor_scale(tmp_path):
    config = ModelConfig(width=0.5, remission_reference=0.28, **SMALL_GRID)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build_model(config), config, epoch=0, val_miou=0.0, training_state={})
    segmenter = Segmenter.from_checkpoint(tmp_path / "m.pt", device="cpu", level_ground=False)
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-20, 20, (500, 3)), rng.uniform(0.0, 0.5, (500, 1))], axis=1)
    points = points.astype(np.float32)
    brighter = points.copy()
    brighter[:, 3] *= 1.7
    prepared = segmenter.prepare(points)
    np.testing.assert_allclose(segmenter.prepare(brighter)[:, 3], prepared[:, 3], rtol=1e-5)
    assert np.median(prepared[:, 3]) == pytest.approx(0.28, rel=1e-5)
    np.testing.assert_array_equal(segmenter.predict(points).labels, segmenter.predict(brighter).labels)


def test_the_reference_must_be_a_positive_remission():
    with pytest.raises(ValueError, match="remission_reference must be null or a positive"):
        ModelConfig(remission_reference=0.0)
