"""Multi-to-single knowledge distillation: M2SKD's three levels plus PVKD's supervoxel affinities.

A frozen teacher (trained on scans with M2SKD's fused hard-class instances) runs on the full batch;
the student ran on ``batch.student_view()``. The teacher's rows of the scan's own points (``is_fused``
False) correspond 1:1, in order, to the student's points, because the dataset appends fused points
after each scan's own points. Terms (each weighted in the YAML, 0 disables it, logged by name):

- ``kd_feature``: per-point intermediate features, student → 1×1 adapter → teacher width, both
  L2-normalised, squared distance (= 2 − 2·cosine) averaged over points (M2SKD feature level);
- ``kd_logit_point`` / ``kd_logit_voxel``: KL(teacher ‖ student) of temperature-softened class
  distributions, × T², on the scan's points and on the student's voxels matched to the teacher's
  voxels by coordinates (M2SKD logit level; PVKD point-/voxel-wise output distillation); with
  ``class_weighted_logits`` each point's KL is weighted by the task loss's class weight of its label;
- ``kd_instance_affinity``: for every hard-class instance of the scan, the cosine-similarity matrix
  of its points' features (≤ K points sampled) in teacher vs student, mean squared difference
  (M2SKD instance-aware affinity; width-agnostic, so no adapter);
- ``kd_point_affinity`` / ``kd_voxel_affinity``: PVKD's inter-point and inter-voxel affinity inside
  supervoxels (blocks of grid cells) sampled with difficulty-aware weights: supervoxels holding
  rare classes or far points are drawn more often.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2s_perception.checkpoint import load_model
from m2s_perception.labels import IGNORE_ID, LabelMap, load_label_map
from m2s_perception.models import ModelConfig, ModelOutput, build_model
from m2s_perception.models.ensemble import Ensemble, mean_probability_logits
from m2s_perception.models.grid import ravel_index
from m2s_training.config import DistillConfig
from m2s_training.data.dataset import Batch

LOSS_NAMES = tuple(DistillConfig().weights())  # kd_feature, kd_logit_point, …, kd_voxel_affinity


# --- the loss terms, on plain tensors --------------------------------------------------------------


def feature_distillation(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over points of ‖ŝ − t̂‖² with row-normalised features (same width)."""
    if len(student) == 0:
        return student.sum() * 0.0
    diff = F.normalize(student, dim=1) - F.normalize(teacher, dim=1)
    return diff.pow(2).sum(dim=1).mean()


def kl_distillation(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, row_weights: Tensor | None = None
) -> Tensor:
    """Mean over rows of KL(softmax(t/T) ‖ softmax(s/T)) · T² (Hinton's scaling keeps gradients comparable);
    with ``row_weights`` the weighted mean Σ wᵢ·KLᵢ / Σ wᵢ."""
    if len(student_logits) == 0:
        return student_logits.sum() * 0.0
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    if row_weights is not None:
        return (kl * row_weights).sum() / row_weights.sum().clamp_min(1e-12) * temperature**2
    return kl.mean() * temperature**2


def match_voxels(student_coords: Tensor, teacher_coords: Tensor) -> tuple[Tensor, Tensor]:
    """Rows (student, teacher) of voxels present in both, matched by (batch, i, j, k)."""
    extent = torch.cat([student_coords, teacher_coords]).amax(dim=0) + 1
    teacher_keys, teacher_order = torch.sort(ravel_index(teacher_coords.unbind(1), extent))
    student_keys = ravel_index(student_coords.unbind(1), extent)
    position = torch.searchsorted(teacher_keys, student_keys).clamp_max(max(len(teacher_keys) - 1, 0))
    if len(teacher_keys) == 0:
        empty = student_coords.new_zeros(0)
        return empty, empty
    found = teacher_keys[position] == student_keys
    return found.nonzero().squeeze(1), teacher_order[position[found]]


def group_affinity_distillation(
    student: Tensor, teacher: Tensor, groups: Tensor, max_per_group: int, generator: torch.Generator | None = None
) -> Tensor:
    """Mean squared difference of within-group cosine-similarity matrices (student vs teacher).

    ``groups`` (N,) long: group of each row, -1 for rows in no group. At most ``max_per_group``
    random rows per group (drawn from ``generator``, default the global RNG) are compared; the
    diagonal (always 1) is left out.
    """
    rows = (groups >= 0).nonzero().squeeze(1)
    if len(rows) < 2:
        return student.sum() * 0.0
    # Sorting by group + a random fraction shuffles rows within each group; take each group's first K.
    jitter = torch.rand(len(rows), device=groups.device, dtype=torch.float64, generator=generator)
    order = torch.argsort(groups[rows].double() + jitter)
    rows = rows[order]
    _, group, counts = torch.unique_consecutive(groups[rows], return_inverse=True, return_counts=True)
    rank = torch.arange(len(rows), device=rows.device) - (torch.cumsum(counts, 0) - counts)[group]
    keep = rank < max_per_group
    rows, group, rank = rows[keep], group[keep], rank[keep]
    size = int(rank.max()) + 1

    def affinity(features: Tensor) -> Tensor:
        # float32 whatever the features' dtype: under CUDA autocast they arrive in half precision
        padded = features.new_zeros((len(counts), size, features.shape[1]), dtype=torch.float32)
        padded[group, rank] = F.normalize(features[rows].float(), dim=1)
        return padded @ padded.transpose(1, 2)

    valid = torch.zeros((len(counts), size), dtype=torch.bool, device=rows.device)
    valid[group, rank] = True
    pairs = valid[:, :, None] & valid[:, None, :] & ~torch.eye(size, dtype=torch.bool, device=rows.device)
    if not bool(pairs.any()):
        return student.sum() * 0.0
    diff = (affinity(student) - affinity(teacher)).pow(2)
    return diff[pairs].mean()


def instance_groups(batch_index: Tensor, labels: Tensor, instance: Tensor, hard_ids: Tensor) -> Tensor:
    """Group id per point for hard-class instances (instance ≠ 0), -1 elsewhere; ids are per cloud."""
    member = (instance != 0) & torch.isin(labels, hard_ids)
    key = (batch_index * (int(labels.max()) + 1 if len(labels) else 1) + labels) * (int(instance.max()) + 1) + instance
    groups = torch.full_like(labels, -1)
    if bool(member.any()):
        groups[member] = torch.unique(key[member], return_inverse=True)[1]
    return groups


def supervoxel_of_voxels(voxel_coords: Tensor, cells: tuple[int, int, int]) -> Tensor:
    """Compact supervoxel id of each voxel: blocks of ``cells`` grid cells per cloud."""
    if len(voxel_coords) == 0:
        return voxel_coords.new_zeros(0)
    block = voxel_coords.clone()
    block[:, 1:] = torch.div(
        voxel_coords[:, 1:], torch.tensor(cells, device=voxel_coords.device), rounding_mode="floor"
    )
    extent = block.amax(dim=0) + 1
    return torch.unique(ravel_index(block.unbind(1), extent), return_inverse=True)[1]


def difficulty_weights(
    point_supervoxel: Tensor,
    num_supervoxels: int,
    labels: Tensor,
    distance: Tensor,
    num_classes: int,
    rare_class_power: float,
    far_weight: float,
) -> Tensor:
    """PVKD-style sampling weight per supervoxel: its hardest point's rarity × distance factor."""
    counts = torch.bincount(labels, minlength=num_classes).to(distance.dtype)
    counts[0] = 0  # unlabeled points are neither rare nor common
    rarity = torch.ones_like(counts)
    present = counts > 0
    if bool(present.any()):
        rarity[present] = (counts.max() / counts[present]) ** rare_class_power
    far = 1.0 + far_weight * distance / distance.max().clamp_min(1e-6)
    point_weight = rarity[labels] * far
    weights = point_weight.new_zeros(num_supervoxels)
    return weights.scatter_reduce(0, point_supervoxel, point_weight, reduce="amax", include_self=False)


def sample_supervoxels(weights: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Boolean mask of ``count`` supervoxels drawn without replacement, proportionally to ``weights``."""
    chosen = torch.zeros(len(weights), dtype=torch.bool, device=weights.device)
    if len(weights) == 0 or count <= 0:
        return chosen
    chosen[torch.multinomial(weights, min(count, len(weights)), replacement=False, generator=generator)] = True
    return chosen


def segment_mean(values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    sums = values.new_zeros((num_segments, values.shape[1])).index_add_(0, segment, values)
    counts = torch.bincount(segment, minlength=num_segments).clamp_min(1).to(values.dtype)
    return sums / counts[:, None]


# --- the module the trainer optimises alongside the student ----------------------------------------


class Distiller(nn.Module):
    """Frozen teacher + trainable 1×1 adapters; ``forward(batch, student_output)`` → weighted terms."""

    def __init__(
        self,
        teacher: nn.Module,
        config: DistillConfig,
        student_widths: dict[str, int],
        teacher_widths: dict[str, int],
        label_map: LabelMap | None = None,
        class_weights: Tensor | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.config = config
        if config.class_weighted_logits and class_weights is None:
            raise ValueError("distill.class_weighted_logits needs the task loss's class weights")
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        needed = set(config.feature_names) | ({config.affinity_feature} if self._uses_affinity() else set())
        for side, widths in (("student", student_widths), ("teacher", teacher_widths)):
            missing = sorted(needed - set(widths))
            if missing:
                raise ValueError(f"{side} model has no point_features {missing}; it has {sorted(widths)}")
        # A 1×1 convolution on per-point features is a linear layer.
        self.adapters = nn.ModuleDict(
            {
                name: nn.Identity()
                if student_widths[name] == teacher_widths[name]
                else nn.Linear(student_widths[name], teacher_widths[name])
                for name in config.feature_names
            }
        )
        # Instance and supervoxel sampling draw from this generator (its state goes into last.pt), not from
        # the global RNG, so a resumed run samples what an uninterrupted one would.
        self.generator = torch.Generator(next(teacher.parameters()).device).manual_seed(seed)
        label_map = label_map or load_label_map()
        self.num_classes = label_map.num_classes
        self.register_buffer("hard_ids", torch.tensor(label_map.hard_class_ids(config.hard_classes)), persistent=False)
        if class_weights is not None:
            point_weights = class_weights.detach().clone().float()
            point_weights[IGNORE_ID] = 1.0  # unlabelled points keep the teacher's knowledge at the mean weight
            self.register_buffer("label_weights", point_weights, persistent=False)

    def _uses_affinity(self) -> bool:
        c = self.config
        return c.instance_affinity > 0 or c.point_affinity > 0 or c.voxel_affinity > 0

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # frozen: batch-norm statistics stay the teacher's
        return self

    def forward(self, batch: Batch, output: ModelOutput, step: int | None = None) -> dict[str, Tensor]:
        """``batch``: the full batch (with fused points); ``output``: the student's on ``batch.student_view()``;
        ``step``: the optimisation step, for ``ramp_steps``."""
        own = ~batch.is_fused
        if len(output.point_logits) != int(own.sum()):
            raise ValueError(
                f"student output has {len(output.point_logits)} points, the batch {int(own.sum())} non-fused ones: "
                "pass the full batch and the student's output on batch.student_view()"
            )
        with torch.no_grad():
            teacher_out = self.teacher(batch.points, batch.batch_index, batch.batch_size)
        c = self.config
        terms: dict[str, Tensor] = {}
        if c.feature > 0:
            terms["kd_feature"] = sum(
                feature_distillation(
                    self.adapters[name](output.point_features[name]), teacher_out.point_features[name][own]
                )
                for name in c.feature_names
            ) / max(len(c.feature_names), 1)
        if c.logit_point > 0:
            row_weights = self.label_weights[batch.labels[own]] if c.class_weighted_logits else None
            terms["kd_logit_point"] = kl_distillation(
                output.point_logits, teacher_out.point_logits[own], c.temperature, row_weights
            )
        if c.logit_voxel > 0:
            student_rows, teacher_rows = match_voxels(output.voxel_coords, teacher_out.voxel_coords)
            terms["kd_logit_voxel"] = kl_distillation(
                output.voxel_logits[student_rows], teacher_out.voxel_logits[teacher_rows], c.temperature
            )
        if self._uses_affinity():
            terms.update(self._affinity_terms(batch, own, output, teacher_out))
        ramp, weights = c.ramp(step), c.weights()
        return {name: value * (weights[name] * ramp) for name, value in terms.items()}

    def _affinity_terms(self, batch: Batch, own: Tensor, output: ModelOutput, teacher_out: ModelOutput) -> dict:
        c = self.config
        student_features = output.point_features[c.affinity_feature]
        teacher_features = teacher_out.point_features[c.affinity_feature][own]
        labels, batch_index = batch.labels[own], batch.batch_index[own]
        terms = {}
        if c.instance_affinity > 0:
            groups = instance_groups(batch_index, labels, batch.instance[own], self.hard_ids)
            terms["kd_instance_affinity"] = group_affinity_distillation(
                student_features, teacher_features, groups, c.affinity_max_points, self.generator
            )
        if c.point_affinity > 0 or c.voxel_affinity > 0:
            voxel_supervoxel = supervoxel_of_voxels(output.voxel_coords, c.supervoxel_cells)
            num_supervoxels = int(voxel_supervoxel.max()) + 1 if len(voxel_supervoxel) else 0
            point_supervoxel = voxel_supervoxel[output.point_to_voxel]
            distance = batch.points[own][:, :2].norm(dim=1)
            weights = difficulty_weights(
                point_supervoxel, num_supervoxels, labels, distance, self.num_classes, c.rare_class_power, c.far_weight
            )
            chosen = sample_supervoxels(weights, c.supervoxels_sampled, self.generator)
            if c.point_affinity > 0:
                groups = torch.where(chosen[point_supervoxel], point_supervoxel, -1)
                terms["kd_point_affinity"] = group_affinity_distillation(
                    student_features, teacher_features, groups, c.affinity_max_points, self.generator
                )
            if c.voxel_affinity > 0:
                num_voxels = len(output.voxel_coords)
                student_voxels = segment_mean(student_features, output.point_to_voxel, num_voxels)
                teacher_voxels = segment_mean(teacher_features, output.point_to_voxel, num_voxels)
                groups = torch.where(chosen[voxel_supervoxel], voxel_supervoxel, -1)
                terms["kd_voxel_affinity"] = group_affinity_distillation(
                    student_voxels, teacher_voxels, groups, c.affinity_max_points, self.generator
                )
        return terms


# --- construction ----------------------------------------------------------------------------------


def feature_widths(model: nn.Module, device: torch.device) -> dict[str, int]:
    """Widths of a model's ``point_features``, read from one forward pass on a few random points."""
    generator = torch.Generator().manual_seed(0)
    points = torch.rand((64, 4), generator=generator) * torch.tensor([40.0, 40.0, 2.0, 1.0]) - torch.tensor(
        [20.0, 20.0, 1.0, 0.0]
    )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(points.to(device), torch.zeros(64, dtype=torch.long, device=device), 1)
    model.train(was_training)
    return {name: int(features.shape[1]) for name, features in out.point_features.items()}


def check_same_grid(teacher: ModelConfig, student: ModelConfig) -> None:
    """Voxel matching needs one grid; the backbones may differ only in width."""
    for key in ("backbone", "grid_size", "rho_range", "z_range", "image_size", "elevation_range", "num_classes"):
        if getattr(teacher, key) != getattr(student, key):
            raise ValueError(
                f"teacher and student differ in {key}: {getattr(teacher, key)} vs {getattr(student, key)}; "
                "distillation needs the same backbone grid"
            )


class TeacherEnsemble(nn.Module):
    """Frozen teachers of one grid as one teacher: their class probabilities averaged, returned as
    log-probabilities (a softmax of them gives the mean back); voxels and point features are the
    first teacher's. An ensemble of students trained with different seeds labels real scans better
    than each of them (docs/benchmarks.md, "Sim-to-real"); distilling it gives one network."""

    def __init__(self, teachers: list[nn.Module]):
        super().__init__()
        if not teachers:
            raise ValueError("an ensemble needs at least one teacher")
        self.teachers = nn.ModuleList(teachers)

    def forward(self, points: Tensor, batch_index: Tensor, batch_size: int) -> ModelOutput:
        outputs = [teacher(points, batch_index, batch_size) for teacher in self.teachers]
        first = outputs[0]
        if any(not torch.equal(o.voxel_coords, first.voxel_coords) for o in outputs[1:]):
            raise ValueError("the ensemble's teachers voxelise the scan differently; they need one grid")

        return ModelOutput(
            mean_probability_logits([o.point_logits for o in outputs]),
            mean_probability_logits([o.voxel_logits for o in outputs]),
            first.voxel_coords,
            first.point_to_voxel,
            first.point_features,
        )


def build_distiller(
    config: DistillConfig | None,
    teacher_ckpt: str | Path | tuple[str | Path, ...],
    student_config: ModelConfig,
    device: str | torch.device = "auto",
    class_weights: Tensor | None = None,
    label_map: LabelMap | None = None,
    seed: int = 0,
) -> Distiller:
    """The trainer's ``extra_loss`` for ``m2s-train --mode distill --teacher CKPT`` (None: default config);
    several checkpoints make a :class:`TeacherEnsemble`, which only the logit terms may use."""
    config = config or DistillConfig()
    paths = list(teacher_ckpt) if isinstance(teacher_ckpt, (list, tuple)) else [teacher_ckpt]
    teachers = []
    for path in paths:
        model, teacher_config, _ = load_model(path, device)
        check_same_grid(teacher_config, student_config)
        teachers.append(model)
    if len(teachers) == 1 and not isinstance(teachers[0], Ensemble):
        teacher = teachers[0]
    else:  # several checkpoints, or one m2s-ensemble checkpoint: probabilities averaged, no features
        feature_terms = {"feature": config.feature, "instance_affinity": config.instance_affinity}
        feature_terms |= {"point_affinity": config.point_affinity, "voxel_affinity": config.voxel_affinity}
        used = [f"distill.{name}" for name, weight in feature_terms.items() if weight > 0]
        if used:
            raise ValueError(f"an ensemble of teachers has no single feature space: set {', '.join(used)} to 0")
        teacher = teachers[0] if len(teachers) == 1 else TeacherEnsemble(teachers)
    device = next(teacher.parameters()).device
    probe_student = build_model(student_config).to(device)
    distiller = Distiller(
        teacher,
        config,
        feature_widths(probe_student, device),
        feature_widths(teacher, device),
        label_map=label_map,
        class_weights=class_weights,
        seed=seed,
    )
    return distiller.to(device)
