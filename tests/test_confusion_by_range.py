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


def test_error_masks_split_a_class_into_found_missed_and_false():
    from bench.confusion_by_range import error_masks

    truth = np.array([3, 3, 2, 1, 0, 2])  # terrain, terrain, sidewalk, road, unlabelled, sidewalk
    guess = np.array([3, 1, 3, 3, 3, 2])
    masks = error_masks(truth, guess, predicted=3)
    assert masks["found"].tolist() == [True, False, False, False, False, False]
    assert masks["missed"].tolist() == [False, True, False, False, False, False]
    # sidewalk and road called terrain; the unlabelled point called terrain is in no mask
    assert masks["false"].tolist() == [False, False, True, True, False, False]


def test_map_draws_one_scan_from_m2s_eval_predictions(tmp_path, capsys):
    import pytest

    from bench.confusion_by_range import main
    from m2s_perception.labels import load_label_map

    labels = load_label_map()
    road, terrain = 40, 72  # SemanticKITTI's raw ids
    assert labels.to_train(np.array([road, terrain])).tolist() == [labels.class_id("road"), labels.class_id("terrain")]
    data, out = tmp_path / "data", tmp_path / "eval"
    for folder in (data / "sequences/00/velodyne", data / "sequences/00/labels", out / "sequences/00/predictions"):
        folder.mkdir(parents=True)
    points = np.array([[5, 0, -1.7, 0.3], [6, 0, -1.7, 0.3], [20, 5, -1.5, 0.4]], np.float32)
    points.tofile(data / "sequences/00/velodyne/000000.bin")
    np.array([road, road, terrain], np.uint32).tofile(data / "sequences/00/labels/000000.label")
    np.array([road, terrain, terrain], np.uint32).tofile(out / "sequences/00/predictions/000000.label")
    picture = tmp_path / "map.png"
    args = ["--data", str(data), "--predictions", str(out), "--predicted", "terrain", "--map", str(picture)]
    main(args)
    text = capsys.readouterr().out
    # 2 called terrain, 1 of them terrain; terrain 1 point, found
    assert "predicted terrain: 2 points, 1 of them terrain (50%)" in text and f"map of 00/000000: {picture}" in text
    assert picture.stat().st_size > 10_000 and picture.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        main([*args, "--scan", "1"])  # one scan only
    with pytest.raises(SystemExit):
        main(["--data", str(data), "--predictions", str(out), "--map", str(picture)])  # --map needs --predicted
