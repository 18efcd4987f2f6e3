"""bench/confusion_by_range.py --predicted: a class's column per band, by hand."""

import numpy as np

from bench.confusion_by_range import column_report

NAMES = ["unlabeled", "road", "sidewalk", "terrain"]


def test_column_report_says_what_the_points_called_a_class_are():
    near = np.zeros((4, 4), np.int64)
    far = np.zeros((4, 4), np.int64)
    near[2, 3], near[3, 3], near[3, 1] = 30, 10, 5  # 30 sidewalk called terrain, 10 terrain found, 5 missed
    far[1, 3], far[3, 3], far[3, 2] = 20, 40, 15  # 20 road called terrain, 40 found, 15 missed
    text = column_report([near, far], [0.0, 15.0, float("inf")], NAMES, predicted=3, columns=4)
    lines = text.splitlines()
    # called terrain: 30 + 10 + 20 + 40 = 100, of them terrain 50; terrain in truth 10 + 5 + 40 + 15 = 70
    # IoU = 50 / (100 + 70 - 50) = 0.417
    assert lines[0] == (
        "predicted terrain: 100 points, 50 of them terrain (50%); terrain in the ground truth: 70 points, "
        "71% found; IoU 0.417"
    )
    assert lines[1] == "  0–15 m: 40 predicted terrain: sidewalk 30, terrain 10"
    assert lines[2] == "  15–beyond: 60 predicted terrain: terrain 40, road 20"
