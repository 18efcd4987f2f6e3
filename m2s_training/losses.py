"""The task loss: class-weighted cross-entropy + Lovász-softmax, both ignoring training id 0.

Lovász-softmax (Berman et al., CVPR 2018) is a convex surrogate of 1 − IoU per class; with the
weighted cross-entropy it is the loss PolarNet and Cylinder3D train with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2s_perception.labels import IGNORE_ID


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    lovasz_weight: float = 1.0
    class_weight_power: float = 0.5  # weights ∝ frequency^-power: 0.5 = inverse square root, 0 = uniform
    # Teacher runs: weight of the fused (neighbour-scan) points' labels in the cross-entropy, relative to
    # the scan's own points. Lovász-softmax, an IoU surrogate over the whole set, has no per-point
    # weights: it keeps fused points unless the weight is 0, which makes them input only.
    fused_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.fused_weight < 0:
            raise ValueError(f"loss.fused_weight must be >= 0, got {self.fused_weight}")


def class_weights_from_counts(counts: np.ndarray, power: float = 0.5) -> torch.Tensor:
    """Cross-entropy weights ∝ frequency^-power, mean 1 over the classes that occur; class 0 gets 0.

    A class that never occurs in the training labels never is a target either, so its weight is
    irrelevant to the loss; it gets the largest observed weight to stay finite.
    """
    counts = np.asarray(counts, dtype=np.float64).copy()
    counts[IGNORE_ID] = 0
    present = counts > 0
    if not present.any():
        raise ValueError("no labelled points to compute class weights from (all labels are 0 / unlabeled)")
    weights = np.zeros_like(counts)
    weights[present] = (counts[present] / counts[present].sum()) ** -power
    weights[present] /= weights[present].mean()
    absent = ~present
    absent[IGNORE_ID] = False
    weights[absent] = weights[present].max()
    return torch.tensor(weights, dtype=torch.float32)


def _lovasz_grad(fg_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. the sorted errors."""
    total_fg = fg_sorted.sum()
    intersection = total_fg - fg_sorted.cumsum(0)
    union = total_fg + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if jaccard.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax(probs: Tensor, labels: Tensor, ignore_index: int = IGNORE_ID) -> Tensor:
    """Mean over the classes present in ``labels`` of the Lovász hinge of 1 − IoU.

    probs: (N, C) softmax probabilities; labels: (N,) class ids. Points labelled ``ignore_index``
    take no part; the ignored class itself is never averaged.
    """
    keep = labels != ignore_index
    probs, labels = probs[keep], labels[keep]
    if labels.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in torch.unique(labels).tolist():
        fg = (labels == c).to(probs.dtype)
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[order])))
    return torch.stack(losses).mean()


class SegmentationLoss(nn.Module):
    """Weighted CE + Lovász-softmax on per-point logits; returns the weighted terms by name."""

    def __init__(self, class_weights: Tensor, config: LossConfig | None = None):
        super().__init__()
        self.config = config or LossConfig()
        self.register_buffer("class_weights", class_weights.float())

    def forward(self, logits: Tensor, labels: Tensor, is_fused: Tensor | None = None) -> dict[str, Tensor]:
        """``is_fused``: which points came from neighbouring scans (weighted by ``config.fused_weight``)."""
        logits = logits.float()  # losses in fp32 also under autocast
        labels = labels.long()
        fused_weight = self.config.fused_weight
        if is_fused is None or fused_weight == 1.0 or not bool(is_fused.any()):
            is_fused = None
        elif fused_weight == 0.0:
            labels, is_fused = labels.masked_fill(is_fused, IGNORE_ID), None
        if not bool((labels != IGNORE_ID).any()):
            zero = logits.sum() * 0.0  # keeps the graph connected (DDP needs every rank to backprop)
            return {"ce": zero, "lovasz": zero}
        ce = self._cross_entropy(logits, labels, is_fused)
        lovasz = lovasz_softmax(F.softmax(logits, dim=1), labels)
        return {"ce": self.config.ce_weight * ce, "lovasz": self.config.lovasz_weight * lovasz}

    def _cross_entropy(self, logits: Tensor, labels: Tensor, is_fused: Tensor | None) -> Tensor:
        if is_fused is None:
            return F.cross_entropy(logits, labels, weight=self.class_weights, ignore_index=IGNORE_ID)
        # F.cross_entropy's class-weighted mean, with fused points' weights scaled
        per_point = F.cross_entropy(logits, labels, ignore_index=IGNORE_ID, reduction="none")
        weights = self.class_weights[labels] * (labels != IGNORE_ID)
        weights = torch.where(is_fused, weights * self.config.fused_weight, weights)
        return (per_point * weights).sum() / weights.sum().clamp_min(1e-12)
