"""bench/ground_by_plants.py: the ground at the feet of plants and fences, counted by hand on made-up returns."""

import numpy as np

from bench.ground_by_plants import GROUND, foot_mask, ground_at_feet
from m2s_perception.labels import load_label_map

LABELS = load_label_map()
FLOOR = -1.73  # the ground below a sensor mounted 1.73 m up


def _scan(rows: list[tuple[float, float, float, str]]) -> tuple[np.ndarray, np.ndarray]:
    points = np.array([(x, y, z, 0.3) for x, y, z, _ in rows], np.float32)
    train = np.array([LABELS.class_id(name) for *_, name in rows])
    return points, train


# A hedge's foot at (10, 0), 0.23 m above the lowest ground of its 1 m cell [10, 11) x [0, 1); a crown
# 1.73 m up at (10, 3); a fence foot at (12, -2); a bush foot at (15, 5) in a cell with no ground return;
# a foot at (2.9, 0.2) beside ground 2.9 m from the sensor, nearer than the 3 m asked for.
ROWS = [
    (10.0, 0.0, -1.50, "vegetation"),
    (10.3, 0.0, FLOOR, "sidewalk"),  # 0.30 m from the hedge's foot: counted
    (10.45, 0.1, FLOOR, "terrain"),  # sqrt(0.45² + 0.1²) = 0.461 m: counted
    (10.6, 0.0, FLOOR, "terrain"),  # 0.60 m: too far
    (10.0, 3.0, 0.00, "vegetation"),
    (10.0, 3.2, FLOOR, "road"),  # 0.2 m from the crown, which is no foot: not counted
    (12.0, -2.0, -1.60, "fence"),
    (12.2, -1.9, FLOOR, "parking"),  # 0.224 m from the fence's foot: counted
    (15.0, 5.0, -1.70, "vegetation"),
    (14.7, 5.0, FLOOR, "sidewalk"),  # 0.3 m from a bush whose cell has no ground: not counted
    (2.9, 0.2, -1.60, "vegetation"),
    (2.9, 0.0, FLOOR, "road"),  # 0.2 m from that foot but 2.9 m from the sensor: not counted
    (2.95, 0.5, FLOOR, "road"),  # the foot cell's ground: 2.996 m from the sensor, and 0.304 m from it
]


def test_feet_are_plants_and_fences_less_than_half_a_metre_above_their_cells_lowest_ground():
    points, train = _scan(ROWS)
    ground = np.isin(train, [LABELS.class_id(n) for n in GROUND])
    standing = np.isin(train, [LABELS.class_id(n) for n in ("vegetation", "fence")])
    feet = foot_mask(points, ground, standing, foot=0.5)
    assert np.flatnonzero(feet).tolist() == [0, 6, 10]  # hedge, fence and the near foot; not the crown or the bush


def test_ground_at_feet_counts_each_class_within_reach_and_range():
    points, train = _scan(ROWS)
    counts = ground_at_feet(points, train, LABELS, near=3.0, far=20.0, foot=0.5, reach=0.5)
    assert dict(zip(GROUND, counts.tolist(), strict=True)) == {
        "road": 0,
        "sidewalk": 1,
        "parking": 1,
        "other-ground": 0,
        "terrain": 1,
    }
    # a reach of 0.65 m takes the terrain return 0.60 m from the hedge, and the road 0.304 m from the near foot
    # stays out by range (2.996 m)
    wider = ground_at_feet(points, train, LABELS, near=3.0, far=20.0, foot=0.5, reach=0.65)
    assert wider.tolist() == [0, 1, 1, 0, 2]
    # from 2 m on, the near foot's two road returns count too
    assert ground_at_feet(points, train, LABELS, near=2.0, far=20.0, foot=0.5, reach=0.5).tolist() == [2, 1, 1, 0, 1]


def test_a_scan_without_plants_or_ground_counts_nothing():
    points, train = _scan([(5.0, 0.0, FLOOR, "road"), (6.0, 0.0, FLOOR, "terrain")])
    assert ground_at_feet(points, train, LABELS, 3.0, 20.0, 0.5, 0.5).tolist() == [0] * 5
    points, train = _scan([(5.0, 0.0, -1.5, "vegetation"), (6.0, 0.0, 0.0, "building")])
    assert ground_at_feet(points, train, LABELS, 3.0, 20.0, 0.5, 0.5).tolist() == [0] * 5


def test_other_standing_classes_such_as_buildings_have_feet_too():
    # a wall's foot at (20, 0), 0.1 m above the sidewalk of its cell; a hedge's foot beside it does not count
    points, train = _scan(
        [
            (20.0, 0.0, -1.63, "building"),
            (20.3, 0.2, FLOOR, "sidewalk"),  # 0.36 m from the wall's foot
            (20.4, 0.0, FLOOR, "terrain"),  # 0.40 m from it
            (22.0, 3.0, -1.5, "vegetation"),
            (22.2, 3.0, FLOOR, "terrain"),  # 0.2 m from the hedge: only with the default classes
        ]
    )
    buildings = ground_at_feet(points, train, LABELS, 3.0, 40.0, 0.5, 0.5, ("building",))
    assert buildings.tolist() == [0, 1, 0, 0, 1]
    assert ground_at_feet(points, train, LABELS, 3.0, 40.0, 0.5, 0.5).tolist() == [0, 0, 0, 0, 1]
