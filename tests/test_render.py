"""Bird's-eye-view renderer: pixel geometry, colours, legend column and the m2s-render CLI."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from m2s_perception.labels import load_label_map
from m2s_training.data.semantic_kitti import write_prediction
from m2s_training.render import BACKGROUND, LEGEND_WIDTH, PANEL_GAP, main, rasterize_bev, render_bev
from m2s_training.synth import generate

LABELS = load_label_map()
CAR, ROAD, POLE = LABELS.class_id("car"), LABELS.class_id("road"), LABELS.class_id("pole")


def _read_rgb(path) -> np.ndarray:
    return (plt.imread(path)[..., :3] * 255).round().astype(np.uint8)


def test_points_land_on_hand_computed_pixels():
    # extent 10 m at 0.5 m/px: 40x40; pixel (row, col) covers x = 10 - (row + 0.5) * 0.5, y likewise.
    points = np.array(
        [
            [9.9, 9.9, 0.0, 0.0],  # row 0, col 0 (front-left corner)
            [0.2, -0.2, 0.0, 0.0],  # row 19, col 20
            [-9.9, -9.9, 0.0, 0.0],  # row 39, col 39
            [30.0, 0.0, 0.0, 0.0],  # outside: dropped
        ],
        np.float32,
    )
    image = rasterize_bev(points, np.array([CAR, ROAD, POLE, CAR]), LABELS, extent_m=10.0, resolution=0.5)
    assert image.shape == (40, 40, 3)
    np.testing.assert_array_equal(image[0, 0], LABELS.train_rgb[CAR])
    np.testing.assert_array_equal(image[19, 20], LABELS.train_rgb[ROAD])
    np.testing.assert_array_equal(image[39, 39], LABELS.train_rgb[POLE])
    drawn = np.any(image != np.array(BACKGROUND, np.uint8), axis=-1)
    assert drawn.sum() == 3


def test_highest_point_wins_a_shared_pixel():
    points = np.array([[1.0, 1.0, 2.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]], np.float32)
    image = rasterize_bev(points, np.array([POLE, ROAD, CAR]), LABELS, extent_m=5.0, resolution=1.0)
    np.testing.assert_array_equal(image[4, 4], LABELS.train_rgb[POLE])  # (5 - 1) / 1


def test_png_has_panels_gap_and_legend(tmp_path):
    points = np.array([[9.95, 9.95, 0.0, 0.5]], np.float32)  # row 0, col 0
    path = render_bev(
        points, [np.array([CAR]), np.array([ROAD])], LABELS, tmp_path / "bev.png", extent_m=10.0, resolution=0.1
    )
    rgb = _read_rgb(path)
    assert rgb.shape == (200, 2 * 200 + 2 * PANEL_GAP + LEGEND_WIDTH, 3)
    np.testing.assert_array_equal(rgb[0, 0], LABELS.train_rgb[CAR])
    np.testing.assert_array_equal(rgb[0, 200 + PANEL_GAP], LABELS.train_rgb[ROAD])
    np.testing.assert_array_equal(rgb[100, 100], BACKGROUND)
    legend = rgb[:, -LEGEND_WIDTH:].reshape(-1, 3)
    for class_id in (CAR, ROAD):
        assert np.any(np.all(legend == LABELS.train_rgb[class_id], axis=1)), "legend swatch missing"
    assert not np.any(np.all(legend == LABELS.train_rgb[POLE], axis=1)), "absent class in legend"
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="points"):
        rasterize_bev(np.zeros(3), np.zeros(3, int), LABELS)
    with pytest.raises(ValueError, match="train_ids"):
        rasterize_bev(np.zeros((3, 4)), np.zeros(2, int), LABELS)
    with pytest.raises(ValueError, match="train_ids"):
        rasterize_bev(np.zeros((1, 4)), np.array([20]), LABELS)


def test_cli_ground_truth_and_prediction(tmp_path, capsys):
    generate(tmp_path / "data", ["08"], scans=2)
    points = np.fromfile(tmp_path / "data/sequences/08/velodyne/000001.bin", np.float32).reshape(-1, 4)
    write_prediction(tmp_path / "pred", "08", "000001", np.full(len(points), CAR), LABELS)
    out = tmp_path / "cmp.png"
    argv = ["--data", str(tmp_path / "data"), "--sequence", "08", "--scan", "1", "--out", str(out)]
    assert main([*argv, "--predictions", str(tmp_path / "pred"), "--extent", "20", "--resolution", "0.2"]) == 0
    rgb = _read_rgb(out)
    assert rgb.shape == (200, 2 * 200 + 2 * PANEL_GAP + LEGEND_WIDTH, 3)
    prediction_panel = rgb[:, 200 + PANEL_GAP : 400 + PANEL_GAP].reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(prediction_panel, axis=0)}
    assert colours == {tuple(BACKGROUND), tuple(LABELS.train_rgb[CAR])}, "prediction panel is all car"
    ground_truth_panel = rgb[:, :200].reshape(-1, 3)
    assert np.any(np.all(ground_truth_panel == LABELS.train_rgb[ROAD], axis=1))

    assert main([*argv[:-3], "5", "--out", str(out)]) == 2
    assert "out of range" in capsys.readouterr().err
