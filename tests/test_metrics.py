"""IoU / mIoU / accuracy against a confusion matrix computed by hand."""

import numpy as np
import pytest
import torch

from m2s_perception.labels import load_label_map
from m2s_training.metrics import SegmentationMetrics, confusion_matrix

# ground truth / prediction pairs; the two points with ground truth 0 must be dropped
TARGET = torch.tensor([1, 1, 1, 2, 2, 3, 0, 0])
PRED = torch.tensor([1, 1, 2, 2, 3, 3, 1, 2])
# rows = ground truth, columns = prediction, written out by hand from the pairs above
EXPECTED = np.array(
    [
        [0, 0, 0, 0],
        [0, 2, 1, 0],
        [0, 0, 1, 1],
        [0, 0, 0, 1],
    ]
)


def test_confusion_matrix_drops_unlabeled_points():
    np.testing.assert_array_equal(confusion_matrix(PRED, TARGET, 4).numpy(), EXPECTED)


def test_iou_miou_accuracy_by_hand():
    metrics = SegmentationMetrics.from_confusion(EXPECTED, hard_ids=(2, 3))
    # class 1: TP 2, FP 0, FN 1; class 2: TP 1, FP 1, FN 1; class 3: TP 1, FP 1, FN 0
    np.testing.assert_allclose(metrics.iou[1:], [2 / 3, 1 / 3, 1 / 2])
    assert metrics.miou == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert metrics.accuracy == pytest.approx(4 / 6)
    assert metrics.hard_miou == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert metrics.points == 6


def test_class_absent_from_prediction_and_truth_counts_as_zero():
    """Official evaluator: the mean runs over every included class, an absent one adds IoU 0."""
    conf = np.zeros((5, 5), dtype=np.int64)
    conf[:4, :4] = EXPECTED
    metrics = SegmentationMetrics.from_confusion(conf)
    assert metrics.iou[4] == 0.0
    assert metrics.miou == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 4)


def test_predictions_of_unlabeled_ground_truth_are_not_scored():
    conf = EXPECTED.copy()
    conf[0, 1] = 50  # ground truth 0 predicted as class 1: not a false positive
    assert SegmentationMetrics.from_confusion(conf).miou == SegmentationMetrics.from_confusion(EXPECTED).miou


def test_to_dict_names_classes():
    label_map = load_label_map()
    conf = np.zeros((20, 20), dtype=np.int64)
    conf[1, 1] = 10  # car right, 10 points
    conf[9, 1] = 10  # road predicted as car
    result = SegmentationMetrics.from_confusion(conf, label_map.hard_class_ids()).to_dict(label_map)
    assert result["iou"]["car"] == pytest.approx(0.5)
    assert result["iou"]["road"] == 0.0
    assert result["miou"] == pytest.approx(0.5 / 19)
    assert len(result["iou"]) == 19 and "unlabeled" not in result["iou"]


def test_rejects_mismatched_or_out_of_range_input():
    with pytest.raises(ValueError, match="predictions for"):
        confusion_matrix(torch.tensor([1, 2]), torch.tensor([1]), 4)
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(torch.tensor([7]), torch.tensor([1]), 4)


def test_present_class_miou_by_hand():
    # rows: truth, columns: prediction; class 3 is predicted but absent from the truth
    confusion = torch.tensor([[5, 0, 0, 1], [0, 2, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    metrics = SegmentationMetrics.from_confusion(confusion)
    assert metrics.present_ids == [1, 2]
    # IoU(1) = 2 / (3 + 2 - 2), IoU(2) = 1 / (1 + 2 - 1); truth 0 is never scored
    assert np.isclose(metrics.present_miou, (2 / 3 + 1 / 2) / 2)
    assert SegmentationMetrics.from_confusion(torch.zeros(4, 4, dtype=torch.int64)).present_miou == 0.0
