"""Pieces both backbones share: the cylindrical grid, per-point features, the point MLP, max-pooling.

All operations are vectorised over points (``torch.unique`` + ``scatter_reduce``), so a 120k-point
scan costs a few kernel launches, not a Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

POINT_FEATURES = 9  # x, y, z, rho, phi, remission, offset to the cell centre (rho, phi, z)


def point_features(texture: bool) -> int:
    """Per-point input features: the nine above, then the surface texture where the model has it."""
    return POINT_FEATURES + int(texture)


def model_columns(points: Tensor, columns: int) -> Tensor:
    """The first ``columns`` columns of ``points`` (a model without texture ignores a fifth column);
    a clear error where the points have fewer than the model eats."""
    if points.ndim != 2 or points.shape[1] < columns:
        names = "x, y, z, remission" + (", texture (m2s_perception/texture.py)" if columns > 4 else "")
        raise ValueError(f"this model eats points of {columns} columns ({names}), got shape {tuple(points.shape)}")
    return points[:, :columns]


@dataclass(frozen=True)
class GridLocation:
    cell: Tensor  # (N, 3) long: i (rho), j (phi), k (z), clamped into the grid
    features: Tensor  # (N, POINT_FEATURES + extra columns) float


class CylindricalGrid:
    """A (rho, phi, z) grid; phi covers the full circle [-π, π)."""

    def __init__(self, size: tuple[int, int, int], rho_range: tuple[float, float], z_range: tuple[float, float]):
        self.size = tuple(size)
        self.lower = torch.tensor([rho_range[0], -math.pi, z_range[0]])
        self.cell_size = torch.tensor(
            [
                (rho_range[1] - rho_range[0]) / size[0],
                2 * math.pi / size[1],
                (z_range[1] - z_range[0]) / size[2],
            ]
        )

    def locate(self, points: Tensor) -> GridLocation:
        """Cell of every point (out-of-range points clamped to the border) and its input features;
        columns after remission (the surface texture) are passed on as the last features."""
        xyz, remission = points[:, :3], points[:, 3:4]
        rho = torch.hypot(xyz[:, 0], xyz[:, 1])
        phi = torch.atan2(xyz[:, 1], xyz[:, 0])
        polar = torch.stack([rho, phi, xyz[:, 2]], dim=1)
        lower = self.lower.to(points.device, points.dtype)
        cell_size = self.cell_size.to(points.device, points.dtype)
        upper = torch.tensor(self.size, device=points.device) - 1
        cell = torch.floor((polar - lower) / cell_size).long()
        cell = torch.minimum(cell.clamp_min(0), upper)
        # Offset in metres/radians: for a clamped point it says how far outside the grid it lies.
        offset = polar - (lower + (cell.to(points.dtype) + 0.5) * cell_size)
        features = torch.cat([xyz, polar[:, :2], remission, offset, points[:, 4:]], dim=1)
        return GridLocation(cell, features)


class PointEncoder(nn.Module):
    """PointNet-style shared MLP over per-point features; the last layer stays linear before pooling."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(in_channels)]
        for index, out_channels in enumerate(channels):
            layers.append(nn.Linear(in_channels, out_channels, bias=index == len(channels) - 1))
            if index < len(channels) - 1:
                layers += [nn.BatchNorm1d(out_channels), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.mlp = nn.Sequential(*layers)
        self.out_channels = in_channels

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(features)


def segment_max(values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """Row-wise max of ``values`` (N, C) over rows sharing a ``segment`` id → (num_segments, C)."""
    out = values.new_zeros((num_segments, values.shape[1]))
    index = segment.unsqueeze(1).expand_as(values)
    return out.scatter_reduce(0, index, values, reduce="amax", include_self=False)


def unique_inverse(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique keys and, per key, its row among them."""
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    return unique, inverse


def ravel_index(coords: Sequence[Tensor], shape: Sequence[int | Tensor]) -> Tensor:
    """Row-major linear index of integer coordinates (one tensor per axis) in a grid of ``shape``.

    ``shape[0]`` is never needed (the first axis is the slowest), so it may be anything.
    """
    index = coords[0]
    for axis in range(1, len(coords)):
        index = index * shape[axis] + coords[axis]
    return index


def occupied_cells(coords: Sequence[Tensor], shape: Sequence[int | Tensor]) -> tuple[Tensor, Tensor]:
    """Sorted linear indices of the cells holding points, and per point the row of its cell among them."""
    return unique_inverse(ravel_index(coords, shape))


def unravel_index(index: Tensor, shape: Sequence[int | Tensor]) -> tuple[Tensor, ...]:
    """The inverse of :func:`ravel_index`: one coordinate tensor per axis of ``shape``."""
    coords = []
    for size in reversed(shape[1:]):
        coords.append(index % size)
        index = index // size
    return (index, *reversed(coords))
