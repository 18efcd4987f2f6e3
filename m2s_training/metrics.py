"""Confusion matrix, per-class IoU and mIoU, computed the way the official SemanticKITTI evaluator does.

The official evaluator (``evaluate_semantics.py`` in PRBonn/semantic-kitti-api) drops points whose
ground truth is the ignored class 0, computes IoU = TP / (TP + FP + FN + 1e-15) per class and
averages it over the 19 included classes 1..19. A class absent from both prediction and ground
truth therefore counts as IoU 0 (not as NaN skipped by ``nanmean``, which some training scripts
report). Accuracy is TP summed over all classes divided by the number of scored points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from m2s_perception.labels import IGNORE_ID, LabelMap

EPS = 1e-15  # the official evaluator's epsilon in the IoU denominator


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts, rows = ground truth, columns = prediction; points labelled 0 are dropped.

    Runs on the tensors' device, so the trainer can accumulate it on the GPU.
    """
    pred = torch.as_tensor(pred).reshape(-1).long()
    target = torch.as_tensor(target).reshape(-1).long().to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"{pred.numel()} predictions for {target.numel()} labels")
    scored = target != IGNORE_ID
    pred, target = pred[scored], target[scored]
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"predictions must be class ids in 0..{num_classes - 1}")
    flat = target * num_classes + pred
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationMetrics:
    iou: np.ndarray  # (C,) per training id; [0] (ignored class) is not part of the mean
    miou: float  # mean over classes 1..C-1, absent classes count as 0 (official evaluator)
    accuracy: float
    hard_miou: float  # mean IoU over the label map's hard classes
    confusion: np.ndarray  # (C, C) rows = ground truth, columns = prediction
    points: int  # scored points (ground truth != 0)

    @classmethod
    def from_confusion(
        cls, confusion: np.ndarray | torch.Tensor, hard_ids: tuple[int, ...] = ()
    ) -> SegmentationMetrics:
        conf = np.asarray(torch.as_tensor(confusion).cpu(), dtype=np.int64)
        conf = conf.copy()
        conf[IGNORE_ID, :] = 0  # ground truth "unlabeled" is never scored
        tp = np.diag(conf).astype(np.float64)
        fp = conf.sum(axis=0) - tp
        fn = conf.sum(axis=1) - tp
        iou = tp / (tp + fp + fn + EPS)
        included = [c for c in range(conf.shape[0]) if c != IGNORE_ID]
        points = int(conf.sum())
        return cls(
            iou=iou,
            miou=float(iou[included].mean()),
            accuracy=float(tp.sum() / (points + EPS)),
            hard_miou=float(iou[list(hard_ids)].mean()) if hard_ids else float("nan"),
            confusion=conf,
            points=points,
        )

    @property
    def present_ids(self) -> list[int]:
        """Training ids (never 0) with ground-truth points: the classes a few real scans actually hold."""
        return [c for c in range(1, len(self.confusion)) if int(self.confusion[c].sum()) > 0]

    @property
    def present_miou(self) -> float:
        """Mean IoU over :attr:`present_ids` (0 when there are none)."""
        present = self.present_ids
        return float(self.iou[present].mean()) if present else 0.0

    def iou_by_name(self, label_map: LabelMap) -> dict[str, float]:
        return {label_map.class_names[c]: float(self.iou[c]) for c in range(1, len(self.iou))}

    def to_dict(self, label_map: LabelMap) -> dict:
        return {
            "miou": self.miou,
            "iou": self.iou_by_name(label_map),
            "accuracy": self.accuracy,
            "hard_miou": self.hard_miou,
            "hard_classes": [label_map.class_names[c] for c in label_map.hard_class_ids()],
            "points": self.points,
            "confusion": self.confusion.tolist(),
            "confusion_layout": "rows = ground-truth training id, columns = predicted training id",
            "miou_definition": "official SemanticKITTI: mean over classes 1..19 of TP/(TP+FP+FN+1e-15), absent = 0",
        }
