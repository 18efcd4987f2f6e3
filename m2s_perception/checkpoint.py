"""Read m2s checkpoints (written by ``m2s_training.checkpoint.save_checkpoint``) into a ready model.

A checkpoint is untrusted input (downloaded, shared, corrupted). Loading refuses, with a message
naming the file, before anything large is allocated:
- pickled code: ``torch.load(weights_only=True)`` unpickles only tensors, plain containers and
  primitive values; any other global (a class, ``os.system``, ``getattr``…) raises;
- archives whose entries claim more bytes than ``MAX_CHECKPOINT_BYTES`` (zip bombs);
- a ``model_config`` outside ``LIMITS`` (sizes that would allocate gigabytes at build or forward);
- weights whose names or shapes differ from the model the config describes (compared on PyTorch's
  ``meta`` device, which allocates no memory);
- a model whose classes differ from the label map in use (count, and names when stored).
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.models import ModelConfig, build_model

CHECKPOINT_FORMAT = "m2s-checkpoint/1"
MAX_CHECKPOINT_BYTES = 4 << 30  # uncompressed archive size; the largest m2s teacher is ~100 MB
# Bounds on model_config far above any m2s model (teacher: width 1, 480×360×32 cells, 4 levels).
LIMITS = {"width": 16.0, "grid_cells": 1 << 26, "levels": 8, "channels": 4096, "num_classes": 1024, "members": 16}


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
    _check_archive(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "Unsupported global" in line), None)
        if reason is None:  # not a pickle at all, or a corrupted one
            raise CheckpointError(f"{path}: not a readable m2s checkpoint (UnpicklingError: {err})") from None
        raise CheckpointError(
            f"{path}: refused: it holds pickled objects that weights_only loading does not allow ({reason}). "
            "m2s checkpoints hold only tensors and plain values."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
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
    if not isinstance(checkpoint["model_config"], dict) or not isinstance(checkpoint["state_dict"], dict):
        raise CheckpointError(f"{path}: model_config and state_dict must be mappings")
    return checkpoint


def load_model(
    path: str | Path, device: str | torch.device = "auto", label_map: LabelMap | None = None
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """Build the checkpoint's model, load its weights, move it to ``device``, eval mode.

    ``label_map`` (default: the packaged SemanticKITTI map) must have the model's classes, else
    ``CheckpointError`` (a ``ValueError``). Returns (model, config, meta).
    """
    checkpoint = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(checkpoint["model_config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot build the model it describes: {err}") from None
    _check_limits(path, config)
    check_classes(path, config, checkpoint.get("class_names"), label_map or load_label_map())
    _check_weights(path, config, checkpoint["state_dict"])
    try:
        model = build_model(config)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot build the model it describes: {err}") from None
    model.to(resolve_device(device)).eval()
    return model, config, dict(checkpoint.get("meta", {}))


_HINT = "give the label map the checkpoint was trained with (m2s-eval --label-map), or use one trained with this map"


def check_classes(path: str | Path, config: ModelConfig, class_names: Any, label_map: LabelMap) -> None:
    """The model's outputs are the label map's training ids: same count, same names when stored."""
    if config.num_classes != label_map.num_classes:
        raise CheckpointError(
            f"{path}: the model predicts {config.num_classes} classes but the label map has "
            f"{label_map.num_classes} ({', '.join(label_map.class_names)}); {_HINT}"
        )
    if class_names is None:  # checkpoints older than class_names: the count is all we can check
        return
    if not isinstance(class_names, (list, tuple)) or not all(isinstance(n, str) for n in class_names):
        raise CheckpointError(f"{path}: class_names must be a list of strings")
    if len(class_names) != config.num_classes:
        raise CheckpointError(
            f"{path}: class_names lists {len(class_names)} classes but the model predicts {config.num_classes}"
        )
    for train_id, (ours, theirs) in enumerate(zip(label_map.class_names, class_names, strict=True)):
        if ours != theirs:
            raise CheckpointError(
                f"{path}: class {train_id} is {theirs!r} in the checkpoint but {ours!r} in the label map; {_HINT}"
            )


def _check_archive(path: Path) -> None:
    """torch.save writes a zip; refuse entries claiming absurd sizes before torch reads them."""
    if not zipfile.is_zipfile(path):
        return  # torch.load reports what the file is not
    try:
        with zipfile.ZipFile(path) as archive:
            claimed = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: not a readable m2s checkpoint ({err})") from None
    if claimed > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path}: refused: its archive entries claim {claimed / 2**30:.1f} GiB "
            f"(limit {MAX_CHECKPOINT_BYTES / 2**30:.0f} GiB)"
        )


def _check_limits(path: str | Path, config: ModelConfig) -> None:
    problems = []
    if config.width > LIMITS["width"]:
        problems.append(f"width {config.width:g} > {LIMITS['width']:g}")
    if math.prod(config.grid_size) > LIMITS["grid_cells"]:
        problems.append(f"grid_size {config.grid_size} has more than {LIMITS['grid_cells']} cells")
    if config.levels > LIMITS["levels"]:
        problems.append(f"levels {config.levels} > {LIMITS['levels']}")
    if max((*config.point_channels, config.base_channels)) > LIMITS["channels"]:
        problems.append(f"point_channels/base_channels above {LIMITS['channels']}")
    if config.members > LIMITS["members"]:
        problems.append(f"members {config.members} > {LIMITS['members']}")
    if config.num_classes > LIMITS["num_classes"]:
        problems.append(f"num_classes {config.num_classes} > {LIMITS['num_classes']}")
    if problems:
        raise CheckpointError(f"{path}: refused: model_config out of bounds: {'; '.join(problems)}")


def _check_weights(path: str | Path, config: ModelConfig, state_dict: dict) -> None:
    """Names and shapes of the stored tensors against the config's model, built on the meta device."""
    not_tensors = [name for name, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path}: state_dict entries that are not tensors: {', '.join(map(str, not_tensors[:5]))}"
        )
    try:
        with torch.device("meta"):
            expected = {name: tuple(t.shape) for name, t in build_model(config).state_dict().items()}
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot build the model it describes: {err}") from None
    stored = {name: tuple(t.shape) for name, t in state_dict.items()}
    problems = [f"missing {name}" for name in expected if name not in stored]
    problems += [f"unexpected {name}" for name in stored if name not in expected]
    problems += [
        f"{name} is {stored[name]} in the file, {shape} in the model"
        for name, shape in expected.items()
        if name in stored and stored[name] != shape
    ]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(
            f"{path}: cannot build the model it describes: the state_dict does not match the model_config: "
            f"{'; '.join(problems[:5])}{more}"
        )
