"""bench/zero_returns.py: where remission-0 returns lie, counted by hand on made-up rings."""

import numpy as np

from bench.ring_steps import ring_index
from bench.zero_returns import ZeroCounts, count_zeros, describe, ring_zero_shares

RANGES = (16.2, 20.2, 24.2, 28.2)  # one ring in the 10-20 m band, three in 20-30 m
AZIMUTHS = 720  # 0.5° apart: 4 returns of each ring per 2° cell


def _rings(zero: np.ndarray) -> np.ndarray:
    """Ring-major points on flat ground, each ring swept from +π down, remission 0 where ``zero``."""
    azimuth = np.linspace(np.pi, -np.pi, AZIMUTHS, endpoint=False) - np.deg2rad(0.25)  # off the cell edges
    flat, lit = np.full(AZIMUTHS, -1.73), np.full(AZIMUTHS, 0.3)
    points = np.concatenate([np.c_[r * np.cos(azimuth), r * np.sin(azimuth), flat, lit] for r in RANGES])
    points = points.astype(np.float32)
    points[zero.ravel(), 3] = 0.0
    return points


def _count(points: np.ndarray) -> ZeroCounts:
    counts = ZeroCounts()
    mask = np.ones(len(points), bool)
    count_zeros(points, mask, counts, near=15.0, far=30.0, rings=ring_index(points))
    counts.ring_shares += ring_zero_shares(points, mask, ring_index(points))
    return counts


def test_a_dark_laser_gives_zeros_in_one_run_along_its_ring():
    zero = np.zeros((len(RANGES), AZIMUTHS), bool)
    zero[0] = True  # the laser of the nearest ring reads 0 all round
    counts = _count(_rings(zero))
    # bands 0-10, 10-20, 20-30, 30-40 m: the 16 m ring is all zeros, the three others have none
    np.testing.assert_array_equal(counts.band_returns, [0, 720, 2160, 0])
    np.testing.assert_array_equal(counts.band_zeros, [0, 720, 0, 0])
    # 180 cells of 4 returns per ring; the 16 m ring's 180 hold a 0, the other 540 none
    assert (counts.cells, counts.cells_with_zero) == (720, 180)
    # every zero but the ring's last is followed by a 0 of the same ring: 719 of 720
    assert (counts.zeros, counts.zeros_after_zero) == (720, 719)
    # rings 5-25 m away: 16.2 m all zeros, 20.2 and 24.2 m none (28.2 m is beyond 25 m)
    assert counts.ring_shares == [1.0, 0.0, 0.0]


def test_zeros_scattered_one_in_four_are_never_followed_by_a_zero():
    zero = np.zeros((len(RANGES), AZIMUTHS), bool)
    zero[:, ::4] = True  # one return of each cell, every ring
    counts = _count(_rings(zero))
    np.testing.assert_array_equal(counts.band_zeros, [0, 180, 540, 0])
    assert (counts.cells, counts.cells_with_zero) == (720, 720)
    assert (counts.zeros, counts.zeros_after_zero) == (720, 0)
    assert counts.ring_shares == [0.25, 0.25, 0.25]
    text = describe("made-up", {"road": counts}, near=15.0, far=30.0)
    assert "road        " in text and "1.00 of 720 | 0.00 of 720" in text
    assert "p10/50/90 0.25/0.25/0.25" in text


def test_counterfactuals_move_or_light_the_zeros_of_the_chosen_returns_only():
    from bench.zero_counterfactual import light_zeros, scatter_zeros

    remission = np.full(1000, 0.3, np.float32)
    remission[100:200] = 0.0  # one run of 100 zeros among the chosen returns
    remission[900:] = 0.0  # zeros outside the mask stay where they are
    remission[:50] = 0.2
    mask = np.arange(1000) < 800
    rng = np.random.default_rng(0)

    scattered = scatter_zeros(remission, mask, rng)
    np.testing.assert_array_equal(scattered[~mask], remission[~mask])
    assert np.sum(scattered[mask] == 0) == 100  # as many zeros, ...
    run = (scattered[:799] == 0) & (scattered[1:800] == 0)
    assert run.sum() < 30  # ... no longer one run: about 100 x 100 / 800 = 12.5 neighbours by chance
    assert set(np.unique(scattered[mask])) <= {0.0, np.float32(0.2), np.float32(0.3)}  # lit values reused

    lit = light_zeros(remission, mask, rng)
    np.testing.assert_array_equal(lit[~mask], remission[~mask])
    assert np.all(lit[mask] > 0) and set(np.unique(lit[mask])) <= {np.float32(0.2), np.float32(0.3)}
    np.testing.assert_array_equal(lit[mask & (remission > 0)], remission[mask & (remission > 0)])


def test_a_drawn_level_replaces_the_chosen_returns_with_a_clipped_normal_and_leaves_the_rest():
    from bench.zero_counterfactual import draw_level

    remission = np.zeros(20000, np.float32)
    remission[10000:] = 0.7
    mask = np.arange(20000) % 2 == 0
    out = draw_level(0.23, 0.03)(remission, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out[~mask], remission[~mask])
    assert abs(out[mask].mean() - 0.23) < 0.002 and abs(out[mask].std() - 0.03) < 0.002  # 10k draws
    clipped = draw_level(0.0, 0.5)(remission, mask, np.random.default_rng(0))[mask]
    assert clipped.min() == np.float32(0.01) and clipped.max() == np.float32(1.0)  # never a 0, never above 1
