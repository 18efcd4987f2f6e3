"""bench/ring_steps.py: ring-to-ring height steps of the ground, by hand."""

import numpy as np

from bench.ring_steps import describe, ring_index, ring_steps, robust_std

RANGES = 8.5 + 1.5 * np.arange(15)  # ring ranges 8.5 ... 29.5 m on the ground


def _rings(heights: np.ndarray, azimuths: int = 360) -> np.ndarray:
    """Ring-major points as a spinning sensor gives them: ring k a circle of radius RANGES[k] at height
    heights[k], each swept from +π down to -π."""
    azimuth = np.linspace(np.pi, -np.pi, azimuths, endpoint=False)
    rings = [
        np.c_[r * np.cos(azimuth), r * np.sin(azimuth), np.full(azimuths, z), np.full(azimuths, 0.3)]
        for r, z in zip(RANGES, heights, strict=True)
    ]
    return np.concatenate(rings).astype(np.float32)


def test_rings_come_from_the_azimuth_wrapping_round():
    points = _rings(np.full(len(RANGES), -1.73))
    np.testing.assert_array_equal(ring_index(points), np.repeat(np.arange(len(RANGES)), 360))


def test_alternate_rings_one_centimetre_high_and_low_step_by_two():
    # +1, -1, +1, ... cm: each inner ring is 2 cm off the line through its neighbours, in turn up and down
    offsets = 0.01 * (-1.0) ** np.arange(len(RANGES))
    points = _rings(-1.73 + offsets)
    steps = ring_steps(points, np.ones(len(points), bool), near=8.0, far=30.0)
    assert len(steps) == 12 * 13  # 12 sectors of 30°, 13 inner rings each
    np.testing.assert_allclose(np.abs(steps[:, 0]), 0.02, atol=1e-4)
    first_sector = steps[:13]
    np.testing.assert_allclose(first_sector[:, 1], RANGES[1:-1], atol=0.05)
    np.testing.assert_allclose(first_sector[:, 0], 0.02 * (-1.0) ** np.arange(1, 14), atol=1e-4)


def test_a_smooth_slope_or_bend_is_no_step_and_a_hole_breaks_the_line():
    # a road falling 2 % with range plus a gentle bend: second differences of a smooth profile ~0
    smooth = -1.73 - 0.02 * (RANGES - 8.5) + 0.0004 * (RANGES - 8.5) ** 2
    steps = ring_steps(_rings(smooth), np.ones(360 * len(RANGES), bool), near=8.0, far=30.0)
    assert np.abs(steps[:, 0]).max() < 0.002
    # only every third ring is road: neighbours 4.5 m apart, so the line spans 9 m > 6 m: no step
    mask = np.repeat(np.arange(len(RANGES)) % 3 == 0, 360)
    assert len(ring_steps(_rings(smooth), mask, near=8.0, far=30.0)) == 0


def test_robust_std_and_summary_by_hand():
    # values 0, ±1, ±2, 10: median 0, |deviations| 0 1 1 2 2 10 -> MAD 1.5 -> 2.2239
    assert abs(robust_std(np.array([0.0, 1.0, -1.0, 2.0, -2.0, 10.0])) - 1.4826 * 1.5) < 1e-9
    steps = np.array([[0.01, 20.0], [-0.01, 20.0], [0.0, 20.0]])  # MAD 0.01 m at 20 m
    text = describe("x", {"road": steps, "terrain": np.zeros((0, 2))})
    # 1.4826 cm; 0.014826 / 20 rad = 0.0425 deg
    assert "road          3 steps, robust std 1.48 cm = 0.042 deg" in text
    assert "terrain   no rings" in text
