"""Levelling a scan on its own ground plane, by hand-made planes and angles."""

from __future__ import annotations

import math

import numpy as np

from m2s_perception.levelling import fit_ground, level, rotation_to_up


def _tilted_street(roll_deg: float, pitch_deg: float, seed: int = 0) -> np.ndarray:
    """Ground z = -1.73 + x tan(pitch) - y tan(roll) (1 cm noise) within 25 m, a wall 8 m to the left
    and a car-sized box: the ground is the lowest surface, not the only one."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-25, 25, 20000), rng.uniform(-25, 25, 20000)
    z = -1.73 + x * math.tan(math.radians(pitch_deg)) - y * math.tan(math.radians(roll_deg))
    ground = np.c_[x, y, z + rng.normal(0, 0.01, len(x))]
    wall = np.c_[rng.uniform(-20, 20, 5000), np.full(5000, 8.0), rng.uniform(-1.7, 3.0, 5000)]
    car = np.c_[rng.uniform(4, 8.5, 3000), rng.uniform(-3, -1.2, 3000), rng.uniform(-1.5, -0.3, 3000)]
    xyz = np.concatenate([ground, wall, car])
    return np.c_[xyz, rng.uniform(0, 1, len(xyz))].astype(np.float32)


def test_the_fitted_plane_is_the_tilted_ground():
    fit = fit_ground(_tilted_street(roll_deg=1.7, pitch_deg=-0.5))
    expected = np.array([math.tan(math.radians(-0.5)), -math.tan(math.radians(1.7)), -1.0])
    expected = -expected / np.linalg.norm(expected)  # upward normal of z = p x + q y + r: (-p, -q, 1)
    angle = math.degrees(math.acos(min(1.0, float(fit.normal @ expected))))
    assert angle < 0.05 and fit.normal[2] > 0
    # the sensor is 1.73 m above the plane, measured along its normal: 1.73 cos(tilt)
    tilt = math.acos(fit.normal[2])
    assert abs(fit.offset - 1.73 * math.cos(tilt)) < 0.01


def test_level_makes_the_ground_horizontal_and_keeps_the_sensor_height():
    scan = _tilted_street(roll_deg=1.7, pitch_deg=1.0)
    levelled = level(scan)
    ground = levelled[:20000]
    # before: one side of the street 20 m out lies 0.59 m higher than the other side's (tan 1.7° × 40 m / 2 each)
    assert np.ptp(scan[:20000, 2]) > 1.5
    assert np.std(ground[:, 2]) < 0.02 and abs(np.median(ground[:, 2]) + 1.73) < 0.01
    np.testing.assert_array_equal(levelled[:, 3], scan[:, 3])  # remission and order kept
    np.testing.assert_allclose(np.linalg.norm(levelled[:, :3], axis=1), np.linalg.norm(scan[:, :3], axis=1), rtol=1e-5)
    # a fifth column (the surface texture) rides along untouched, and the points move as without it
    textured = np.c_[scan, np.random.default_rng(1).uniform(0, 1, len(scan))].astype(np.float32)
    levelled_textured = level(textured)
    np.testing.assert_array_equal(levelled_textured[:, 3:], textured[:, 3:])
    np.testing.assert_allclose(levelled_textured[:, :3], levelled[:, :3], atol=1e-6)


def test_a_level_scan_stays_level_and_no_ground_means_no_change():
    flat = _tilted_street(0.0, 0.0)
    np.testing.assert_allclose(level(flat)[:, :3], flat[:, :3], atol=2e-3)  # a tilt under 0.01°: under 2 mm at 25 m
    sky = np.array([[1.0, 1.0, 5.0, 0.5]] * 20, dtype=np.float32)  # 20 points: too few for a plane
    assert fit_ground(sky) is None
    np.testing.assert_array_equal(level(sky), sky)
    wall_only = _tilted_street(0.0, 0.0)[20000:25000]  # a vertical wall is never taken for the ground
    assert fit_ground(wall_only) is None


def test_rotation_to_up_by_hand():
    a = math.radians(30.0)
    normal = np.array([math.sin(a), 0.0, math.cos(a)])
    rotation = rotation_to_up(normal)
    np.testing.assert_allclose(rotation @ normal, [0.0, 0.0, 1.0], atol=1e-12)
    # about y by -a (x' = x cos θ + z sin θ, z' = -x sin θ + z cos θ, θ = -a): the x axis -> (cos a, 0, sin a)
    np.testing.assert_allclose(rotation @ [1.0, 0.0, 0.0], [math.cos(a), 0.0, math.sin(a)], atol=1e-12)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(rotation_to_up(np.array([0.0, 0.0, 1.0])), np.eye(3))


def test_the_segmenter_sees_a_tilted_scan_as_the_level_one():
    """A network reads heights: the same street tilted 2° gets other labels unless levelled first."""
    import torch

    from m2s_perception.inference import Segmenter
    from m2s_perception.models import ModelConfig, build_model

    config = ModelConfig(width=0.5, grid_size=(32, 48, 16), rho_range=(2.0, 40.0), z_range=(-3.0, 2.0), levels=3)
    torch.manual_seed(0)
    model = build_model(config)
    level_street = _tilted_street(0.0, 0.0)
    roll = math.radians(2.0)  # the whole street, wall and car too, rolled 2° about the x axis
    rotation = np.array([[1, 0, 0], [0, math.cos(roll), -math.sin(roll)], [0, math.sin(roll), math.cos(roll)]])
    tilted_street = level_street.copy()
    tilted_street[:, :3] = level_street[:, :3] @ rotation.T
    plain = Segmenter(model, config, "cpu", level_ground=False)
    levelling = Segmenter(model, config, "cpu", level_ground=True)
    reference = plain.predict(level_street).labels
    agree_levelled = np.mean(levelling.predict(tilted_street).labels == reference)
    agree_plain = np.mean(plain.predict(tilted_street).labels == reference)
    assert agree_levelled > 0.97 and agree_plain < agree_levelled - 0.05
    assert "ground levelled" in levelling.describe() and "ground levelled" not in plain.describe()
