"""The official M2SKD loss terms, as the released code (skyshoumeng/M2SKD) computes them.

M2SKD trains ONE network with shared weights on two views of the same scan per step: the single
scan (student view) and the scan plus hard-class instances fused from previous scans (teacher
view). These functions are the terms of that recipe on plain tensors, rows being occupied voxels;
``docs/methods.md`` compares them with m2s's own terms (``m2s_training/distill.py``).

- student view: plain cross-entropy (no class weights, ignore 0) + Lovász-softmax;
- teacher view: 0.2 × plain cross-entropy on the teacher view's voxel labels, only where they
  differ from the single scan's label of the same voxel (:func:`changed_labels`);
- distillation, teacher side detached: 5 × :func:`logit_term` + 0 × :func:`feature_term`
  + 1 × :func:`affinity_term`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2s_perception.labels import IGNORE_ID
from m2s_perception.models import ModelOutput
from m2s_training.config import M2skdConfig
from m2s_training.data.dataset import Batch
from m2s_training.distill import match_voxels

# The official constants (the official weights are M2skdConfig's defaults).
LOGIT_SCALE = 0.3  # softmax(0.3 · z): a temperature of 1 / 0.3
LOGIT_KEEP_ABOVE = 0.01  # voxels whose term is at most this are left out of the mean
FEATURE_KEEP_ABOVE = 1.0
THING_CLASSES = (2, 3, 4, 5, 6, 7, 8)  # bicycle … motorcyclist in the 19-class map; car (1) is not one
_EPS = 1e-6


def logit_term(
    student_logits: Tensor, teacher_logits: Tensor, scale: float = LOGIT_SCALE, keep_above: float = LOGIT_KEEP_ABOVE
) -> Tensor:
    """Mean over kept voxels of mean_c p_t,c · |log((p_t,c + ε) / (p_s,c + ε))|, p = softmax(scale · z).

    Rows are the student view's occupied voxels, the teacher's logits taken at the same voxels. A
    voxel is kept when its value exceeds ``keep_above`` (voxels the views already agree on do not
    dilute the mean); no kept voxel gives 0. There is no T² factor.
    """
    p_student = F.softmax(student_logits.float() * scale, dim=1)
    p_teacher = F.softmax(teacher_logits.detach().float() * scale, dim=1)
    per_voxel = (p_teacher * torch.log((p_teacher + _EPS) / (p_student + _EPS)).abs()).mean(dim=1)
    kept = per_voxel[torch.isfinite(per_voxel) & (per_voxel > keep_above)]
    return kept.mean() if len(kept) else student_logits.sum() * 0.0


def feature_term(student_features: Tensor, teacher_features: Tensor, keep_above: float = FEATURE_KEEP_ABOVE) -> Tensor:
    """Mean over voxels whose channel-mean squared error exceeds ``keep_above`` (0 when none)."""
    per_voxel = (teacher_features.detach().float() - student_features.float()).pow(2).mean(dim=1)
    kept = per_voxel[per_voxel > keep_above]
    return kept.mean() if len(kept) else student_features.sum() * 0.0


def affinity_term(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, classes: tuple[int, ...] = THING_CLASSES
) -> Tensor:
    """Σ over ``classes`` of mean |S_s − S_t|, S the cosine-similarity matrix of that class's voxels' logits.

    Class-level, over the whole batch: for each class with at least two voxels, every pair of its
    voxels is compared (the diagonal included, as in the official code, where it is 1 − 1 = 0).
    The official code pools batch items 0 and 1 with a special case when item 0 has exactly one
    such voxel; here all voxels of the class in the batch are pooled.
    """
    total = student_logits.sum() * 0.0
    for label in classes:
        rows = (labels == label).nonzero().squeeze(1)
        if len(rows) < 2:
            continue
        student = F.normalize(student_logits[rows].float(), dim=1)
        teacher = F.normalize(teacher_logits[rows].detach().float(), dim=1)
        total = total + (student @ student.T - teacher @ teacher.T).abs().mean()
    return total


def changed_labels(teacher_view_labels: Tensor, student_view_labels: Tensor) -> Tensor:
    """The teacher view's labels where they differ from the student view's, ``IGNORE_ID`` elsewhere.

    Rows are the teacher view's voxels; ``student_view_labels`` holds the single scan's label of the
    same voxel, ``IGNORE_ID`` where the single scan has no point there (a voxel only fused points
    fill: always a change).
    """
    return torch.where(teacher_view_labels == student_view_labels, IGNORE_ID, teacher_view_labels)


def voxel_majority_labels(point_to_voxel: Tensor, point_labels: Tensor, num_voxels: int, num_classes: int) -> Tensor:
    """Each voxel's most frequent point label (ties: the smaller id), as Cylinder3D labels voxels."""
    counts = torch.zeros(num_voxels * num_classes, dtype=torch.long, device=point_labels.device)
    counts.index_add_(0, point_to_voxel * num_classes + point_labels.long(), torch.ones_like(point_to_voxel))
    return counts.view(num_voxels, num_classes).argmax(dim=1)


def plain_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Unweighted CE ignoring ``IGNORE_ID``; 0 (graph kept) when nothing is labelled."""
    if not bool((labels != IGNORE_ID).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_ID)


def distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    student_features: Tensor | None = None,
    teacher_features: Tensor | None = None,
    weights: M2skdConfig | None = None,
) -> dict[str, Tensor]:
    """The weighted distillation terms on the student view's voxels (rows aligned across views);
    ``weights`` default: the official ones."""
    weights = weights or M2skdConfig()
    terms = {
        "m2skd_logit": weights.logit * logit_term(student_logits, teacher_logits),
        "m2skd_affinity": weights.affinity * affinity_term(student_logits, teacher_logits, labels),
    }
    if weights.feature > 0 and student_features is not None and teacher_features is not None:
        terms["m2skd_feature"] = weights.feature * feature_term(student_features, teacher_features)
    return terms


class JointM2skd(nn.Module):
    """The teacher view of M2SKD's shared-weight training, as the trainer's extra loss.

    ``forward(batch, output)``: ``output`` is the model's on ``batch.student_view()`` (its task loss,
    plain CE + Lovász, is the trainer's); this runs the SAME model on the full batch (scan + fused
    instances) with gradients, and returns the teacher-view CE on changed voxel labels and the
    distillation terms on the student view's voxels, matched to the teacher view's by coordinates.
    The model is held outside the module's parameters, so the optimiser does not see it twice.
    """

    def __init__(self, model: nn.Module, num_classes: int, weights: M2skdConfig | None = None):
        super().__init__()
        self._model = [model]  # a plain list: not a submodule
        self.num_classes = num_classes
        self.weights = weights or M2skdConfig()

    def forward(self, batch: Batch, output: ModelOutput, step: int | None = None) -> dict[str, Tensor]:
        own = ~batch.is_fused
        teacher = self._model[0](batch.points, batch.batch_index, batch.batch_size)
        student_labels = voxel_majority_labels(
            output.point_to_voxel, batch.labels[own], len(output.voxel_coords), self.num_classes
        )
        teacher_labels = voxel_majority_labels(
            teacher.point_to_voxel, batch.labels, len(teacher.voxel_coords), self.num_classes
        )
        student_rows, teacher_rows = match_voxels(output.voxel_coords, teacher.voxel_coords)
        single_scan_label = torch.full_like(teacher_labels, IGNORE_ID)
        single_scan_label[teacher_rows] = student_labels[student_rows]
        changed = changed_labels(teacher_labels, single_scan_label)
        terms = {"m2skd_teacher_ce": self.weights.teacher_view_ce * plain_cross_entropy(teacher.voxel_logits, changed)}
        terms.update(
            distillation(
                output.voxel_logits[student_rows],
                teacher.voxel_logits[teacher_rows],
                student_labels[student_rows],
                weights=self.weights,
            )
        )
        return terms
