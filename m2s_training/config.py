"""The training config: one typed tree, one loader, ``--set`` overrides, and the resume comparison.

A training YAML has these sections, each a dataclass (``m2s_perception.typed_config.from_dict``
rejects unknown keys and wrong types in every section, also those the run's mode does not use)::

    label_map: null        # label map YAML; null = the packaged config/semantic-kitti.yaml
    model:    ModelConfig   (m2s_perception.models; num_classes comes from the label map)
    data:     DataConfig    splits, batch size, workers, scan/point budgets
    augment:  AugmentConfig (m2s_training.data.dataset)
    loss:     LossConfig    (m2s_training.losses)
    optim:    OptimConfig   AdamW + warm-up + cosine decay
    train:    LoopConfig    mode, teacher, steps, validation/checkpoint/log cadence, seed, AMP
    fusion:   FusionConfig  M2SKD multi-scan fusion (teacher / distill); null = none
    distill:  DistillConfig the m2s_training.distill terms' weights and sampling (distill mode)
    m2skd:    M2skdConfig   the official M2SKD terms' weights (m2skd mode; m2s_training.m2skd)

A run's ``config.yaml`` is this tree after overrides, so ``m2s-train --config RUN/config.yaml``
repeats the run (mode and teacher included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.models import ModelConfig
from m2s_perception.typed_config import ConfigError, from_dict, to_dict
from m2s_training.data.dataset import AugmentConfig
from m2s_training.fusion import MovingPolicy, Placement
from m2s_training.losses import LossConfig

MODES = ("student", "teacher", "distill", "m2skd")

# What may differ between a run's saved config and the config it is resumed with: budget and
# cadence, not what the weights have learnt from so far.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.max_steps",
    "train.val_every",
    "train.checkpoint_every",
    "train.log_every",
    "data.num_workers",
    "data.max_val_scans",
)


@dataclass
class DataConfig:
    batch_size: int = 2
    num_workers: int = 2
    train_split: str = "train"
    val_split: str = "val"
    max_train_scans: int | None = None  # evenly spaced subset; None = every scan
    max_val_scans: int | None = None
    max_train_points: int | None = None  # random subset of each training scan's points (CPU budget)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01  # cosine decay ends at lr × min_lr_ratio
    grad_clip: float = 10.0  # max gradient norm; 0 disables
    # Weight averaging (m2s_training.averaging): from this fraction of the steps on, the weights of
    # every step are averaged; the run ends by writing OUT/averaged.pt (batch-norm statistics
    # measured again on ``average_bn_batches`` training batches). None: off.
    average_from: float | None = None
    average_bn_batches: int = 50

    def __post_init__(self) -> None:
        if self.average_from is not None and not 0.0 <= self.average_from < 1.0:
            raise ValueError(f"optim.average_from must be in [0, 1), got {self.average_from}")
        if self.average_bn_batches < 1:
            raise ValueError(f"optim.average_bn_batches must be >= 1, got {self.average_bn_batches}")


@dataclass
class LoopConfig:
    """The ``train:`` section: what kind of run, how long, how often to validate, save and log."""

    # student | teacher (needs fusion) | distill (needs teacher) | m2skd (needs fusion: official M2SKD,
    # one shared-weight network seeing the scan and the fused scan, see m2s_training.m2skd)
    mode: str = "student"
    # teacher checkpoint (distill mode); a list: an ensemble, its class probabilities averaged
    # (logit terms only: the teachers share no feature space)
    teacher: str | tuple[str, ...] | None = None
    epochs: int = 10
    max_steps: int | None = None  # optimisation steps in total; None = epochs × steps per epoch
    val_every: int = 0  # steps between validations; 0 = after every epoch
    checkpoint_every: int = 200  # steps between OUT/last.pt writes (also written at the end)
    log_every: int = 10  # steps averaged per CSV row
    seed: int = 0
    amp: bool = True  # mixed precision, used on CUDA only

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if isinstance(self.teacher, tuple) and len(self.teacher) == 1:
            self.teacher = self.teacher[0]
        for name in ("epochs", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class FusionConfig:
    """M2SKD multi-scan fusion: ``m2s_training.fusion.MultiScanFuser``'s keyword arguments."""

    hard_classes: tuple[str, ...] | None = None  # None: the label map's hard classes
    k_previous: int = 4
    k_next: int = 0
    moving: MovingPolicy = "align"
    only_present: bool = True
    motion_threshold: float = 1.0
    cache_dir: str | None = None
    placement: Placement = "poses"
    full_history_only: bool = False


@dataclass
class DistillConfig:
    """The ``distill:`` section: ``m2s_training.distill.Distiller``'s loss weights and sampling."""

    # weights; 0 turns a term off
    feature: float = 1.0
    logit_point: float = 1.0
    logit_voxel: float = 0.5
    instance_affinity: float = 1.0
    point_affinity: float = 0.0  # PVKD
    voxel_affinity: float = 0.0  # PVKD
    temperature: float = 2.0
    feature_names: tuple[str, ...] = ("bev_decoder",)  # point_features keys distilled through adapters
    affinity_feature: str = "bev_decoder"  # point_features key of the affinity terms
    affinity_max_points: int = 32  # K: points (voxels) sampled per instance (supervoxel)
    hard_classes: tuple[str, ...] | None = None  # None: the label map's hard classes
    supervoxel_cells: tuple[int, int, int] = (16, 16, 4)  # supervoxel size in grid cells (rho, phi, z)
    supervoxels_sampled: int = 24  # per batch
    rare_class_power: float = 0.5  # supervoxel weight grows as (max class count / class count) ** power
    far_weight: float = 1.0  # … and as 1 + far_weight · distance / farthest distance
    ramp_steps: int = 0  # weights rise linearly from 0 over the first N steps: the student learns the task first
    # Point KL weighted per point by the task loss's class weight of its label (unlabelled points: 1),
    # so rare classes count in the soft targets as much as in the class-weighted cross-entropy.
    class_weighted_logits: bool = False

    def __post_init__(self) -> None:
        self.feature_names = tuple(self.feature_names)
        self.supervoxel_cells = tuple(int(v) for v in self.supervoxel_cells)
        if self.hard_classes is not None:
            self.hard_classes = tuple(self.hard_classes)
        if self.temperature <= 0:
            raise ValueError(f"distill.temperature must be positive, got {self.temperature}")
        if self.affinity_max_points < 2:
            raise ValueError(f"distill.affinity_max_points must be >= 2, got {self.affinity_max_points}")
        if self.ramp_steps < 0:
            raise ValueError(f"distill.ramp_steps must be >= 0, got {self.ramp_steps}")
        if len(self.supervoxel_cells) != 3 or min(self.supervoxel_cells) < 1:
            raise ValueError(f"distill.supervoxel_cells must be three positive sizes, got {self.supervoxel_cells}")
        negative = [name for name, w in self.weights().items() if w < 0]
        if negative:
            raise ValueError(f"distill weights must be >= 0: {', '.join(negative)}")

    def weights(self) -> dict[str, float]:
        """The weight of each loss term, by the name the distiller logs it under."""
        return {
            "kd_feature": self.feature,
            "kd_logit_point": self.logit_point,
            "kd_logit_voxel": self.logit_voxel,
            "kd_instance_affinity": self.instance_affinity,
            "kd_point_affinity": self.point_affinity,
            "kd_voxel_affinity": self.voxel_affinity,
        }

    def ramp(self, step: int | None) -> float:
        """Factor on every weight at optimisation step ``step`` (0-based; None: fully on)."""
        if step is None or self.ramp_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / self.ramp_steps)


@dataclass(frozen=True)
class M2skdConfig:
    """Weights of the official M2SKD terms (m2skd mode, ``m2s_training.m2skd``); the defaults are the
    released code's: 5 × logit, 0 × feature, 1 × class-level affinity, 0.2 × teacher-view CE."""

    logit: float = 5.0
    feature: float = 0.0
    affinity: float = 1.0
    teacher_view_ce: float = 0.2


@dataclass
class TrainConfig:
    label_map: str | None = None  # label map YAML (relative: to the working directory); None = packaged
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    fusion: FusionConfig | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    m2skd: M2skdConfig = field(default_factory=M2skdConfig)

    def __post_init__(self) -> None:
        if self.train.mode in ("teacher", "m2skd") and self.fusion is None:
            mode = self.train.mode
            raise ValueError(f"{mode} mode needs a 'fusion:' section (MultiScanFuser settings) in the config")
        if self.train.mode == "distill" and not self.train.teacher:
            raise ValueError("distill mode needs a teacher checkpoint: --teacher CKPT (train.teacher)")
        if self.model.members != 1:
            raise ValueError(
                f"model.members is {self.model.members}: an ensemble is not trained as one; train each member "
                "(train.seed) and assemble their checkpoints with m2s-ensemble"
            )

    def load_label_map(self) -> LabelMap:
        return load_label_map(self.label_map)


# Keys of the layout before the train: and augment: sections, so an old YAML fails with a pointer.
_MOVED = {name: f"train.{name}" for name in ("epochs", "max_steps", "val_every", "checkpoint_every", "log_every")}
_MOVED |= {"seed": "train.seed", "amp": "train.amp"}


def config_from_dict(doc: Any, where: str = "config") -> TrainConfig:
    """The typed config of a YAML mapping; model.num_classes is filled in from the label map.

    ``where`` (e.g. the file) prefixes every message: ``train.yaml: optim.lr: expected a number``.
    """
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of config sections, got {type(doc).__name__}")
    moved = [f"{old} is now {new}" for old, new in _MOVED.items() if old in doc]
    if isinstance(doc.get("data"), dict) and "augment" in doc["data"]:
        moved.append("data.augment is now the top-level section augment")
    if moved:
        raise ConfigError(f"{where}: {'; '.join(moved)}")
    doc = {**doc, "model": dict(doc.get("model") or {})}
    label_map_path = doc.get("label_map")
    if label_map_path is not None and not isinstance(label_map_path, str):
        raise ConfigError(f"{where}: label_map: expected a path string, got {type(label_map_path).__name__}")
    num_classes = load_label_map(label_map_path).num_classes
    given = doc["model"].setdefault("num_classes", num_classes)
    if given != num_classes:
        raise ConfigError(
            f"{where}: model.num_classes: {given}, but the label map {label_map_path or '(packaged)'} has "
            f"{num_classes} classes; leave num_classes out, it comes from the label map"
        )
    try:
        return from_dict(TrainConfig, doc, "")
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def load_config(path: str | Path, values: dict[str, Any] | None = None) -> TrainConfig:
    """Read a training YAML, set dotted keys (``{"optim.lr": 3e-3}``), check every key and type."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections")
    return config_from_dict(set_values(doc, values or {}), str(path))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["optim.lr=3e-3", "model.grid_size=[48, 48, 8]"]`` → {dotted key: YAML-parsed value}."""
    values = {}
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {text!r}")
        try:
            values[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {text!r}: the value is not valid YAML ({err})") from None
    return values


def set_values(doc: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` with each dotted key set; missing or null sections are created."""
    doc = yaml.safe_load(yaml.safe_dump(doc))  # deep copy of plain values
    for key, value in values.items():
        *sections, name = key.split(".")
        node = doc
        for depth, section in enumerate(sections):
            if node.get(section) is None:
                node[section] = {}
            node = node[section]
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {'.'.join(sections[: depth + 1])} is not a section")
        node[name] = value
    return doc


def override(config: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``config`` with dotted keys replaced, loaded and checked again (the typed ``--set``)."""
    doc = config_to_dict(config)
    del doc["model"]["num_classes"]  # derived from the label map, which ``values`` may change
    return config_from_dict(set_values(doc, values), "config")


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return to_dict(config)


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1e-3}} → {"optim.lr": 1e-3}."""
    flat = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Lines ``key: saved → current`` for every difference a resume may not make (see RESUMABLE_CHANGES)."""
    old, new = flatten(saved), flatten(current)
    keys = sorted((set(old) | set(new)) - set(RESUMABLE_CHANGES))
    return [f"{k}: {old.get(k, '(absent)')!r} → {new.get(k, '(absent)')!r}" for k in keys if old.get(k) != new.get(k)]


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """Teacher and label map as absolute paths: the run's config.yaml works from any directory."""
    paths = {"train.teacher": config.train.teacher, "label_map": config.label_map}
    absolute = {
        key: [str(Path(v).resolve()) for v in value] if isinstance(value, tuple) else str(Path(value).resolve())
        for key, value in paths.items()
        if value is not None
    }
    return override(config, absolute) if absolute else config


def check_resumable(checkpoint: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """A resume continues the same run: same mode, same config up to budget and cadence."""
    state = checkpoint.get("training_state")
    if state is None:
        raise ValueError(f"{path}: no trainer state to resume from")
    if state["mode"] != config.train.mode:
        raise ValueError(f"{path}: was a {state['mode']} run, cannot resume it as {config.train.mode}")
    differences = resume_differences(state["config"], config_to_dict(config))
    if differences:
        raise ValueError(
            f"--resume: the config differs from the one {path} was trained with (saved → now):\n  "
            + "\n  ".join(differences)
            + "\nresume with the run's own OUT/config.yaml, or start a new run in another --out"
        )
