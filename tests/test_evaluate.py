"""m2s-eval: metrics.json, IoU chart and official-format predictions that agree with each other."""

import json
from pathlib import Path

import numpy as np
import pytest

from m2s_perception.inference import Segmenter
from m2s_perception.labels import load_label_map
from m2s_perception.models import ModelConfig, build_model
from m2s_training.checkpoint import save_checkpoint
from m2s_training.data.semantic_kitti import Sequence, prediction_path, read_labels
from m2s_training.evaluate import main
from m2s_training.synth import generate


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    generate(data, ["08"], preset="tiny", scans=3, seed=2)
    config = ModelConfig(width=0.25, grid_size=(24, 24, 8), point_channels=(16, 32), base_channels=16, levels=2)
    checkpoint = root / "model.pt"
    save_checkpoint(checkpoint, build_model(config), config)
    return data, checkpoint


def official_miou(predictions: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """IoU per class from the label files directly, as the official evaluator defines it."""
    pred, target = np.concatenate(predictions), np.concatenate(targets)
    pred, target = pred[target != 0], target[target != 0]
    ious = []
    for c in range(1, 20):
        tp = np.sum((pred == c) & (target == c))
        union = np.sum((pred == c) | (target == c))
        ious.append(tp / (union + 1e-15))
    return float(np.mean(ious))


def test_eval_writes_metrics_chart_and_predictions_that_agree(setup, tmp_path, capsys):
    data, checkpoint = setup
    out = tmp_path / "out"
    main(["--checkpoint", str(checkpoint), "--data", str(data), "--split", "val", "--out", str(out), "--device", "cpu"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scans"] == 3 and metrics["sequences"] == ["08"]
    assert set(metrics["iou"]) == set(load_label_map().class_names[1:])
    assert np.asarray(metrics["confusion"]).shape == (20, 20)
    assert (out / "iou.png").stat().st_size > 0
    assert "mIoU" in capsys.readouterr().out

    label_map = load_label_map()
    sequence = Sequence(data, "08")
    predictions, targets = [], []
    for index in range(len(sequence)):
        frame = sequence.frame(index)
        raw, _ = read_labels(prediction_path(out, "08", sequence.frame_id(index)), len(frame.points))
        predictions.append(label_map.to_train(raw))
        targets.append(label_map.to_train(frame.semantic))
    assert metrics["miou"] == pytest.approx(official_miou(predictions, targets), abs=1e-12)
    pred, target = np.concatenate(predictions), np.concatenate(targets)
    assert metrics["accuracy"] == pytest.approx(np.mean(pred[target != 0] == target[target != 0]))
    # the written labels are exactly what the node's code path predicts
    segmenter = Segmenter.from_checkpoint(checkpoint, "cpu")
    np.testing.assert_array_equal(predictions[1], segmenter.predict(sequence.points(1)).labels)


def test_eval_bad_input_is_a_clear_error(setup, tmp_path):
    data, checkpoint = setup
    with pytest.raises(SystemExit, match="checkpoint not found"):
        main(["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(data), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no sequences/ folder"):
        main(["--checkpoint", str(checkpoint), "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="test sequences"):
        main(["--checkpoint", str(checkpoint), "--data", str(data), "--split", "test", "--out", str(tmp_path / "o")])


def test_eval_real_folder_without_poses_reports_present_class_miou(setup, tmp_path, capsys):
    """A folder of real scans has only velodyne/ and labels/: m2s-eval must still score it."""
    data, checkpoint = setup
    real = tmp_path / "real"
    (real / "sequences" / "05").mkdir(parents=True)
    for folder in ("velodyne", "labels"):
        (real / "sequences" / "05" / folder).symlink_to(data / "sequences" / "08" / folder)
    out = tmp_path / "out"
    main(["--checkpoint", str(checkpoint), "--data", str(real), "--split", "all", "--out", str(out),
          "--device", "cpu", "--bev", "1"])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scans"] == 3
    confusion = np.asarray(metrics["confusion"])
    present = [c for c in range(1, 20) if confusion[c].sum() > 0]
    ious = [confusion[c, c] / (confusion[c].sum() + confusion[:, c].sum() - confusion[c, c]) for c in present]
    assert metrics["present_classes"] == [load_label_map().class_names[c] for c in present]
    assert metrics["present_miou"] == pytest.approx(np.mean(ious))
    assert metrics["present_miou"] >= metrics["miou"]  # absent classes count 0 in the official mean
    assert "present-class mIoU" in capsys.readouterr().out
    assert metrics["sequences"] == ["05"]
    assert (out / "bev_05_000000.png").stat().st_size > 0
