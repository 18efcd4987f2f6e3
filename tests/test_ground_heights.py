"""bench/ground_heights.py: each ground class's height above the road under the sensor, by hand."""

import numpy as np

from bench.ground_heights import BANDS, describe, heights_above_road

ROAD, SIDEWALK, TERRAIN = 9, 11, 17


def _street(tilt_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Ground 1.73 m below the sensor on a 0.5 m grid, 3–30 m around it: road everywhere except
    sidewalks 0.12 m high for 6 <= |y| < 9 m and grass 0.30 m high for |y| >= 9 m beyond 15 m away (both
    sides, so the street's own ground plane is level). With ``tilt_deg`` the scan is pitched about y, as
    a tilted sensor sees it."""
    xs, ys = np.meshgrid(np.arange(-30.0, 30.0, 0.5), np.arange(-30.0, 30.0, 0.5))
    xy = np.c_[xs.ravel(), ys.ravel()]
    distance = np.hypot(*xy.T)
    xy, distance = xy[(distance > 3.0) & (distance < 30.0)], distance[(distance > 3.0) & (distance < 30.0)]
    classes = np.full(len(xy), ROAD)
    z = np.full(len(xy), -1.73)
    sidewalk = (np.abs(xy[:, 1]) >= 6.0) & (np.abs(xy[:, 1]) < 9.0)
    grass = (np.abs(xy[:, 1]) >= 9.0) & (distance >= 15.0)
    classes[sidewalk], z[sidewalk] = SIDEWALK, -1.61
    classes[grass], z[grass] = TERRAIN, -1.43
    xyz = np.c_[xy, z]
    if tilt_deg:
        c, s = np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg))
        xyz = xyz @ np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]).T
    return np.c_[xyz, np.full(len(xyz), 0.3)].astype(np.float32), classes


def test_heights_above_the_road_by_hand_also_on_a_tilted_scan():
    for tilt in (0.0, 2.0):  # 2 degrees: ±0.5 m at 15 m unlevelled; levelling must take it out
        points, classes = _street(tilt)
        height, distance = heights_above_road(points, classes, ROAD)
        np.testing.assert_allclose(height[classes == ROAD], 0.0, atol=0.02)
        np.testing.assert_allclose(height[classes == SIDEWALK], 0.12, atol=0.02)
        np.testing.assert_allclose(height[classes == TERRAIN], 0.30, atol=0.02)
        assert distance[classes == TERRAIN].min() >= 15.0 - 0.05


def test_too_little_road_and_the_summary():
    points, classes = _street()
    few = np.where(np.hypot(points[:, 0], points[:, 1]) < 4.0, SIDEWALK, classes)  # no road within 4 m ...
    assert heights_above_road(points, few, ROAD, under=4.0) is None  # ... so no reference
    values = {("road", "0-15 m"): [np.linspace(-0.1, 0.1, 101)], ("terrain", "15-30 m"): [np.full(60, 0.25)]}
    text = describe("x", values)
    assert list(BANDS) == ["0-15 m", "15-30 m"]
    assert "road      0-15 m: -0.08/+0.00/+0.08   15-30 m: —" in text
    assert "terrain   0-15 m: —   15-30 m: +0.25/+0.25/+0.25" in text
    assert "sidewalk  0-15 m: —   15-30 m: —" in text
