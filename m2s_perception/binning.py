"""Polar binning in numpy for inference: a scan → the integer indices and features a polar network eats.

It computes what ``CylindricalGrid.locate`` + ``torch.unique`` compute inside ``PolarNet.forward``
(same float32 operations in the same order, so the same cells), but

- the unique occupied cells come from a dense occupancy table over the rho × phi grid, not a sort:
  O(points + cells) and already in ascending order, like ``torch.unique(sorted=True)``;
- every array lives in buffers kept between scans (grown only when a scan has more points than any
  before), so a steady stream of scans allocates nothing on this path;
- the features are laid out channel-first (9, N; 10 with the surface texture), so that every row
  is one contiguous numpy ufunc pass; the network transposes them once for its row-wise point MLP.

The arrays handed out are views into those buffers: valid until the next call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from m2s_perception.models import ModelConfig
from m2s_perception.models.grid import point_features


@dataclass
class BinnedScan:
    features: np.ndarray  # (9 or 10, N) float32, channel-first (models.grid.CylindricalGrid.locate's order)
    point_cell: np.ndarray  # (N,) int64: row of ``cells`` holding each point
    point_voxel: np.ndarray  # (N,) int64: point_cell * height_bins + height bin
    cells: np.ndarray  # (U,) int64: occupied rho·phi cells (i * phi_bins + j), ascending


class PolarBinning:
    def __init__(self, config: ModelConfig):
        if config.backbone != "polar":
            raise ValueError(f"PolarBinning needs a polar backbone, got {config.backbone!r}")
        self.size = config.grid_size
        self.columns, self.rows = config.point_columns, point_features(config.uses_texture)
        rho_bins, phi_bins, height_bins = config.grid_size
        # float32 like the torch grid (CylindricalGrid keeps float32 tensors), shaped to broadcast over (3, N).
        self.lower = np.array([config.rho_range[0], -math.pi, config.z_range[0]], np.float32)[:, None]
        self.cell_size = np.array(
            [
                (config.rho_range[1] - config.rho_range[0]) / rho_bins,
                2 * math.pi / phi_bins,
                (config.z_range[1] - config.z_range[0]) / height_bins,
            ],
            np.float32,
        )[:, None]
        self.upper = np.array(config.grid_size, np.int64)[:, None] - 1
        self._occupied = np.zeros(rho_bins * phi_bins, bool)
        self._row_of_cell = np.zeros(rho_bins * phi_bins, np.int64)
        self._arange = np.arange(rho_bins * phi_bins, dtype=np.int64)
        self._capacity = 0
        self._grow(1)

    def _grow(self, num_points: int) -> None:
        capacity = max(num_points, 2 * self._capacity)
        # Flat, so that the first n points of a (rows, n) view are one contiguous block (engines want that).
        self._features = np.empty(self.rows * capacity, np.float32)
        self._scaled = np.empty(3 * capacity, np.float32)
        self._cell = np.empty(3 * capacity, np.int64)
        self._cells = np.empty(len(self._arange), np.int64)
        self._key = np.empty(capacity, np.int64)
        self._point_cell = np.empty(capacity, np.int64)
        self._point_voxel = np.empty(capacity, np.int64)
        self._capacity = capacity

    def __call__(self, points: np.ndarray) -> BinnedScan:
        """``points``: (N, 4) float32 x, y, z, remission, (N, 5) with the texture for a model that
        has it (finite; checked by the caller)."""
        n = len(points)
        if n > self._capacity:
            self._grow(n)
        features = self._features[: self.rows * n].reshape(self.rows, n)
        scaled, cell = self._scaled[: 3 * n].reshape(3, n), self._cell[: 3 * n].reshape(3, n)
        key, point_cell, point_voxel = self._key[:n], self._point_cell[:n], self._point_voxel[:n]
        _, phi_bins, height_bins = self.size

        features[0:3] = points[:, :3].T  # x, y, z
        features[5] = points[:, 3]  # remission
        if self.columns > 4:
            features[9] = points[:, 4]  # surface texture
        np.hypot(features[0], features[1], out=features[3])
        np.arctan2(features[1], features[0], out=features[4])
        z = features[2]
        # cell = clamp(floor((polar - lower) / cell_size)), as CylindricalGrid.locate
        np.subtract(features[3:5], self.lower[:2], out=scaled[:2])
        np.subtract(z, self.lower[2], out=scaled[2])
        np.divide(scaled, self.cell_size, out=scaled)
        np.floor(scaled, out=scaled)
        cell[...] = scaled  # float → int64, exact after floor (values are small)
        np.clip(cell, 0, self.upper, out=cell)
        # offset = polar - (lower + (cell + 0.5) * cell_size), in the same float32 order
        np.add(cell, np.float32(0.5), out=scaled, casting="unsafe")
        np.multiply(scaled, self.cell_size, out=scaled)
        np.add(scaled, self.lower, out=scaled)
        np.subtract(features[3:5], scaled[:2], out=features[6:8])
        np.subtract(z, scaled[2], out=features[8])

        # Occupied cells in ascending order and each point's row among them, through a dense table.
        np.multiply(cell[0], phi_bins, out=key)
        np.add(key, cell[1], out=key)
        self._occupied[key] = True
        cells = self._cells[: np.count_nonzero(self._occupied)]
        np.compress(self._occupied, self._arange, out=cells)  # ascending, like torch.unique(sorted=True)
        self._occupied[cells] = False  # reset only what this scan touched
        self._row_of_cell[cells] = self._arange[: len(cells)]
        np.take(self._row_of_cell, key, out=point_cell)
        np.multiply(point_cell, height_bins, out=point_voxel)
        np.add(point_voxel, cell[2], out=point_voxel)
        return BinnedScan(features, point_cell, point_voxel, cells)
