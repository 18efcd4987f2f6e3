"""bench/vegetation_height.py: each near vegetation point's cell top above the ground plane, by hand."""

import numpy as np

from bench.vegetation_height import cell_tops, describe


def _scene(tilt_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Flat ground 1.73 m below the sensor, 3–20 m around it, and three plants: a low hedge cell at
    x 10.2–10.8 m (returns 0.2 and 0.8 m up), a tall one at x 12.5 (1.6 m) and one 18 m away (out of range)."""
    xs, ys = np.meshgrid(np.arange(-20.0, 20.0, 0.5), np.arange(-20.0, 20.0, 0.5))
    ground = np.c_[xs.ravel(), ys.ravel()]
    ground = ground[(np.hypot(*ground.T) > 3.0) & (np.hypot(*ground.T) < 20.0)]
    ground = np.c_[ground, np.full(len(ground), -1.73)]
    plants = np.array([[10.2, 0.3, -1.73 + 0.2], [10.8, 0.7, -1.73 + 0.8], [12.5, 0.5, -1.73 + 1.6], [18.0, 0.5, -1.0]])
    xyz = np.r_[ground, plants]
    if tilt_deg:  # the whole scan rolled about x: levelling must undo it
        c, s = np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg))
        xyz = xyz @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]).T
    points = np.c_[xyz, np.full(len(xyz), 0.3)].astype(np.float32)
    vegetation = np.r_[np.zeros(len(ground), bool), np.ones(4, bool)]
    return points, vegetation


def test_cell_tops_by_hand():
    for tilt in (0.0, 2.0):
        points, vegetation = _scene(tilt)
        np.testing.assert_allclose(cell_tops(points, vegetation, 7.0, 15.0), [0.8, 0.8, 1.6], atol=0.02)


def test_no_vegetation_in_range_and_the_summary():
    points, vegetation = _scene()
    assert len(cell_tops(points, vegetation, 30.0, 40.0)) == 0
    assert describe("x", np.array([0.8, 0.8, 1.6, 2.0])) == (
        "x: 4 points, cell top q10/50/90 0.80/1.20/1.88 m, share < 1.5 m 0.50, < 1.0 m 0.50"
    )
    assert describe("x", np.zeros(0)) == "x: no vegetation in range"
