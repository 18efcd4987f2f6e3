"""Segmentation backbones: one config, one output contract, one factory.

``build_model(ModelConfig(backbone="polar", width=0.5))`` gives a PolarNet-style student;
``backbone="cylinder"`` gives the Cylinder3D-style sparse 3D network (needs ``spconv``).
Teacher and student of one backbone differ only in ``width`` and share the grid, so their
voxel coordinates and per-point features line up for distillation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from m2s_perception.typed_config import from_dict, to_dict

BACKBONES = ("polar", "cylinder", "range")


@dataclass
class ModelConfig:
    backbone: str = "polar"  # "polar" | "cylinder" | "range"
    width: float = 1.0  # channel multiplier: teacher 1.0, student e.g. 0.5
    num_classes: int = 20
    # Cylindrical grid (both backbones): bins along rho, phi and z; points outside the ranges are
    # clamped to the border cells, so every point still gets a prediction.
    grid_size: tuple[int, int, int] = (480, 360, 32)
    rho_range: tuple[float, float] = (3.0, 50.0)  # metres
    z_range: tuple[float, float] = (-3.0, 1.5)  # metres, LiDAR frame
    point_channels: tuple[int, ...] = (64, 128, 256)  # point MLP widths at width 1.0
    base_channels: int = 32  # first grid-network level at width 1.0; doubles per level
    levels: int = 4  # resolution levels of the U-Net (polar) / sparse encoder (cylinder)
    # Range view (backbone "range"): a spherical image of rows (elevation) x columns (azimuth) and the
    # elevations (degrees) its rows span; the HDL-64E's beams lie within +2 ... -24.8 degrees.
    image_size: tuple[int, int] = (64, 1024)
    elevation_range: tuple[float, float] = (-25.0, 3.0)
    circular_phi: bool = True  # polar: pad the phi axis circularly (the grid wraps at ±π)
    # A point branch (PVKD), both backbones: per-point logits from each point's own features and its
    # voxel's decoder feature, added to the voxel logits. Off: every point copies its voxel's logits.
    point_branch: bool = False
    # One more input per point: how rough its surface looks along the scan line (m2s_perception/
    # texture.py), which tells grass from pavement on real scans: the relative range step between ring
    # neighbours that reads as fully rough (e.g. 0.0025). The points then carry it as a fifth column
    # (x, y, z, remission, texture), computed from the scan in sensor order. None: no texture input.
    texture_step: float | None = None
    # The step below which a surface reads as smooth (0): pavement, whose texture differs a little
    # between simulation and a real sensor, all reads alike; texture_step - texture_floor is the ramp.
    texture_floor: float = 0.0
    # Where the texture is given (m2s_perception/texture.py, with_texture): only within this height (m) of the
    # scan's ground plane, 0 elsewhere; and only for a scan whose own ground 5-15 m away steps by at most
    # texture_quiet_bound (relative) between ring neighbours, else 0 everywhere. None: everywhere, always.
    texture_ground_band: float | None = None
    texture_quiet_bound: float | None = None
    # Remission on one scale per scan (m2s_perception/remission.py): every scan's remission multiplied so
    # that the median of its lit returns is this value (e.g. 0.28), in training after the augmentations
    # and at inference. None: remission as the sensor gives it.
    remission_reference: float | None = None
    # An ensemble (inference only, assembled by m2s-ensemble from trained checkpoints): this many
    # networks of this config, class probabilities averaged (m2s_perception/models/ensemble.py).
    members: int = 1

    def __post_init__(self) -> None:
        self.grid_size = tuple(int(v) for v in self.grid_size)
        self.rho_range = tuple(float(v) for v in self.rho_range)
        self.z_range = tuple(float(v) for v in self.z_range)
        self.point_channels = tuple(int(v) for v in self.point_channels)
        self.image_size = tuple(int(v) for v in self.image_size)
        self.elevation_range = tuple(float(v) for v in self.elevation_range)
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {', '.join(BACKBONES)}")
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")
        if len(self.grid_size) != 3 or min(self.grid_size) < 1:
            raise ValueError(f"grid_size must be three positive bin counts (rho, phi, z), got {self.grid_size}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be two positive counts (rows, columns), got {self.image_size}")
        for name in ("rho_range", "z_range", "elevation_range"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name} must be (low, high) with low < high, got {(low, high)}")
        if self.rho_range[0] < 0:
            raise ValueError(f"rho_range must start at or above 0 m, got {self.rho_range}")
        if self.texture_step is not None and not 0 <= self.texture_floor < self.texture_step:
            raise ValueError(
                f"texture_step must be null or a relative range step above texture_floor >= 0, got "
                f"texture_step {self.texture_step}, texture_floor {self.texture_floor}"
            )
        for name in ("texture_ground_band", "texture_quiet_bound"):
            value = getattr(self, name)
            if value is not None and (self.texture_step is None or not value > 0):
                raise ValueError(f"{name} must be null, or positive with texture_step set; got {value}")
        if self.remission_reference is not None and not self.remission_reference > 0:
            raise ValueError(
                f"remission_reference must be null or a positive remission, got {self.remission_reference}"
            )
        if self.members < 1:
            raise ValueError(f"members must be at least 1, got {self.members}")
        if self.num_classes < 2 or self.levels < 1 or not self.point_channels:
            raise ValueError("num_classes >= 2, levels >= 1 and at least one point channel are required")

    @property
    def point_columns(self) -> int:
        """Columns of the points the model eats: x, y, z, remission (and texture)."""
        return 5 if self.uses_texture else 4

    @property
    def uses_texture(self) -> bool:
        return self.texture_step is not None

    def channels(self, base: int) -> int:
        """``base`` channels scaled by the width multiplier (at least 4)."""
        return max(4, round(base * self.width))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "model") -> ModelConfig:
        """Keys and value types checked by the one config loader (``m2s_perception.typed_config``)."""
        return from_dict(cls, values, where)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ModelConfig:
        """Load a config file; model keys may sit at the top level or under ``model:``."""
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        values = doc.get("model", doc) if isinstance(doc, dict) else None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of model config keys")
        return cls.from_dict(values, f"{path}: model")


@dataclass
class ModelOutput:
    point_logits: Tensor  # (N, C), one row per input point, same order
    voxel_logits: Tensor  # (V, C), one row per occupied voxel
    voxel_coords: Tensor  # (V, 4) long: batch, i (rho), j (phi), k (z)
    point_to_voxel: Tensor  # (N,) long: row of voxel_logits holding each point
    point_features: dict[str, Tensor] = field(default_factory=dict)  # name -> (N, C_f)

    @classmethod
    def from_voxels(
        cls,
        voxel_logits: Tensor,
        voxel_coords: Tensor,
        point_to_voxel: Tensor,
        point_features: dict[str, Tensor],
        point_head: nn.Module | None = None,
        decoder: str = "",
    ) -> ModelOutput:
        """The output of a backbone that predicts per voxel: every point gets its voxel's logits, plus, with
        the point branch (``point_head``), a correction of its own from its ``point_mlp`` feature and its
        voxel's ``decoder`` feature (both from ``point_features``)."""
        point_logits = voxel_logits[point_to_voxel]
        if point_head is not None:
            own = torch.cat([point_features["point_mlp"], point_features[decoder]], dim=1)
            point_logits = point_logits + point_head(own)
        return cls(point_logits, voxel_logits, voxel_coords, point_to_voxel, point_features)


def point_head(config: ModelConfig, in_channels: int) -> nn.Module | None:
    """The point branch's MLP (``config.point_branch``): [point MLP feature, voxel decoder feature] →
    a per-point correction of the voxel's logits; None without the branch."""
    if not config.point_branch:
        return None
    hidden = config.channels(64)
    return nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, config.num_classes))


def build_model(config: ModelConfig) -> nn.Module:
    if config.members > 1:
        from m2s_perception.models.ensemble import Ensemble

        return Ensemble(config)
    if config.backbone == "polar":
        from m2s_perception.models.polar import PolarNet

        return PolarNet(config)
    if config.backbone == "cylinder":
        from m2s_perception.models.cylinder import Cylinder3D

        return Cylinder3D(config)
    if config.backbone == "range":
        from m2s_perception.models.range_view import RangeNet

        return RangeNet(config)
    raise ValueError(f"unknown backbone {config.backbone!r}; expected one of {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "ModelConfig", "ModelOutput", "build_model", "point_head"]
