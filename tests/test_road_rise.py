"""bench/road_rise.py: the road's height per sector against the road under the sensor, by hand."""

import numpy as np

from bench.road_rise import describe, road_rise


def _street(tilt_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A road 1.73 m below the sensor, 3–30 m around it on a 0.5 m grid; 15–30 m away the road ahead
    (+x sector) lies 0.3 m higher and the road to the left (+y sector) 0.5 m lower; behind and right stay
    level. With ``tilt_deg`` the whole scan is pitched about y, as a sensor on a slope sees it."""
    xs, ys = np.meshgrid(np.arange(-30.0, 30.0, 0.5), np.arange(-30.0, 30.0, 0.5))
    xy = np.c_[xs.ravel(), ys.ravel()]
    distance = np.hypot(*xy.T)
    xy, distance = xy[(distance > 3.0) & (distance < 30.0)], distance[(distance > 3.0) & (distance < 30.0)]
    z = np.full(len(xy), -1.73)
    far = distance >= 15.0
    z[far & (xy[:, 0] > np.abs(xy[:, 1]))] += 0.3  # ahead
    z[far & (xy[:, 1] > np.abs(xy[:, 0]))] -= 0.5  # left
    xyz = np.c_[xy, z]
    if tilt_deg:
        c, s = np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg))
        xyz = xyz @ np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]).T
    points = np.c_[xyz, np.full(len(xyz), 0.3)].astype(np.float32)
    return points, np.ones(len(points), bool)


def test_road_rise_by_hand_also_on_a_tilted_scan():
    for tilt in (0.0, 2.0):  # 2 degrees: 0.7 m at 20 m unlevelled; levelling must take it out
        rises = road_rise(*_street(tilt), near=15.0, far=30.0, under=8.0)
        assert set(rises) == {"ahead", "left", "behind", "right"}
        np.testing.assert_allclose(
            [rises["ahead"], rises["left"], rises["behind"], rises["right"]], [0.3, -0.5, 0.0, 0.0], atol=0.02
        )


def test_too_little_road_and_the_summary():
    points, road = _street()
    assert road_rise(points, np.zeros(len(points), bool), 15.0, 30.0, 8.0) == {}  # no road under the sensor
    only_near = road & (np.hypot(points[:, 0], points[:, 1]) < 10.0)
    assert road_rise(points, only_near, 15.0, 30.0, 8.0) == {}  # road under it, none away
    text = describe("x", {"ahead": [0.0, 0.1, 0.3, 0.4], "left": [], "behind": [-0.3], "right": [0.05]})
    assert "ahead     4 scans, rise p10/50/90 +0.03/+0.20/+0.37 m, |rise| > 0.2 m in 50%" in text
    assert "left   no scan with enough road" in text
    assert "behind    1 scans, rise p10/50/90 -0.30/-0.30/-0.30 m, |rise| > 0.2 m in 100%" in text
