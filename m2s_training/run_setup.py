"""What a training run is made of, besides the model: its data sets, its extra loss, its schedule.

``m2s_training.trainer.Trainer`` builds a run from these; they depend only on the config and the mode
(``student``, ``teacher``, ``distill``, ``m2skd``), never on the trainer's state.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from m2s_perception.labels import LabelMap
from m2s_training.config import OptimConfig, TrainConfig
from m2s_training.data.dataset import SemanticKittiDataset
from m2s_training.data.semantic_kitti import existing_split
from m2s_training.distributed import Distributed


def build_datasets(
    config: TrainConfig, root: Path, label_map: LabelMap
) -> tuple[SemanticKittiDataset, SemanticKittiDataset]:
    """The training and validation sets; teacher, distill and m2skd runs fuse previous scans."""
    mode, data = config.train.mode, config.data
    fuser = None
    if mode in ("teacher", "distill", "m2skd") and config.fusion is not None:
        from m2s_training.fusion import MultiScanFuser

        fuser = MultiScanFuser(**vars(config.fusion), label_map=label_map)
    train = SemanticKittiDataset(
        root,
        existing_split(root, data.train_split, label_map),
        label_map,
        config.augment,
        fuser,
        data.max_train_scans,
        config.train.seed,
        data.max_train_points,
        config.model.texture_step,
        config.model.texture_floor,
        config.model.remission_reference,
        config.model.texture_ground_band,
        config.model.texture_quiet_bound,
    )
    val_fuser = fuser if mode == "teacher" else None  # a teacher is judged on the input it will get
    val_sequences = existing_split(root, data.val_split, label_map)
    val = SemanticKittiDataset(
        root,
        val_sequences,
        label_map,
        None,
        val_fuser,
        data.max_val_scans,
        texture_step=config.model.texture_step,
        texture_floor=config.model.texture_floor,
        remission_reference=config.model.remission_reference,
        texture_ground_band=config.model.texture_ground_band,
        texture_quiet_bound=config.model.texture_quiet_bound,
    )
    return train, val


def build_extra_loss(
    config: TrainConfig,
    model: nn.Module,
    label_map: LabelMap,
    class_weights: torch.Tensor,
    device: torch.device,
    ddp: Distributed,
) -> nn.Module | None:
    """The loss a mode adds to the task loss: distillation (``distill``), the joint M2SKD terms
    (``m2skd``), or nothing (``student``, ``teacher``)."""
    mode = config.train.mode
    if mode == "m2skd":
        if ddp.enabled:  # the teacher view's forward bypasses DDP: its gradients would not be synced
            raise ValueError("m2skd mode runs on one process; start m2s-train without torchrun")
        from m2s_training.m2skd import JointM2skd

        return JointM2skd(model, label_map.num_classes, config.m2skd)
    if mode != "distill":
        return None
    from m2s_training.distill import build_distiller

    return build_distiller(
        config.distill,
        config.train.teacher,
        config.model,
        device,
        class_weights=class_weights,
        label_map=label_map,
        seed=config.train.seed + ddp.rank,
    ).to(device)


def lr_factor(step: int, total_steps: int, optim: OptimConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine
