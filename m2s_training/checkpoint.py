"""Write checkpoints atomically in the format ``m2s_perception.checkpoint.load_model`` reads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m2s_perception.checkpoint import CHECKPOINT_FORMAT
from m2s_perception.labels import load_label_map
from m2s_perception.models import ModelConfig
from m2s_training.atomic import atomic_path


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    model_config: ModelConfig,
    *,
    class_names: Sequence[str] | None = None,
    training_state: dict[str, Any] | None = None,
    **meta: Any,
) -> None:
    """Save ``model`` (DDP-wrapped or not) with its config; a reader never sees a half-written file.

    ``class_names``: the label map's names by training id, which the model's outputs mean (None: the
    packaged SemanticKITTI map); loading checks them against the label map in use.

    ``meta`` (epoch, val mIoU, …) must be plain Python values. ``training_state`` (optimizer,
    scheduler, scaler, step, …) is what ``--resume`` needs; inference ignores it.
    """
    names = list(load_label_map().class_names if class_names is None else class_names)
    if len(names) != model_config.num_classes:
        raise ValueError(f"{len(names)} class names for a model with {model_config.num_classes} outputs")
    model = getattr(model, "module", model)  # DistributedDataParallel wraps the real model
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model_config": model_config.to_dict(),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "class_names": names,
        "meta": dict(meta),
    }
    if training_state is not None:
        checkpoint["training_state"] = training_state
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
