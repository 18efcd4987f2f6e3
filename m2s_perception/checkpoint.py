"""Read m2s checkpoints (written by ``m2s_training.checkpoint.save_checkpoint``) into a ready model."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m2s_perception.models import ModelConfig, build_model

CHECKPOINT_FORMAT = "m2s-checkpoint/1"


class CheckpointError(ValueError):
    """A file that is not a usable m2s checkpoint; the message names the file."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, validated; tensors on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable m2s checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise CheckpointError(f"{path}: not an m2s checkpoint (no 'format' tag; expected {CHECKPOINT_FORMAT!r})")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {checkpoint['format']!r}; expected {CHECKPOINT_FORMAT!r}"
        )
    missing = [key for key in ("model_config", "state_dict") if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "auto") -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """Build the checkpoint's model, load its weights, move it to ``device``, eval mode.

    Returns (model, config, meta).
    """
    checkpoint = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(checkpoint["model_config"])
        model = build_model(config)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot build the model it describes: {err}") from None
    model.to(resolve_device(device)).eval()
    return model, config, dict(checkpoint.get("meta", {}))
