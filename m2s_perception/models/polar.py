"""PolarNet-style backbone: points → max-pooled polar bird's-eye view → 2D U-Net → logits per (rho, phi, z).

The U-Net predicts ``num_classes × height_bins`` values per BEV cell; a point's logits are those of
its height bin in its cell. The 1×1 prediction head is applied only at occupied cells (identical to a
1×1 convolution over the grid, without materialising a classes × heights × cells tensor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2s_perception.models import ModelConfig, ModelOutput, point_head
from m2s_perception.models.grid import (
    CylindricalGrid,
    PointEncoder,
    model_columns,
    occupied_cells,
    point_features,
    segment_max,
    unravel_index,
)


class DoubleConv(nn.Module):
    """Two 3×3 conv + BN + ReLU on a (rho, phi) map.

    With ``circular_phi`` the phi axis wraps around (the grid is a full circle): the input is padded
    circularly by two columns once, and both convs run unpadded along phi.
    """

    def __init__(self, in_channels: int, out_channels: int, circular_phi: bool):
        super().__init__()
        self.circular_phi = circular_phi
        padding = (1, 0) if circular_phi else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=padding, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.circular_phi:
            x = F.pad(x, (2, 2, 0, 0), mode="circular")
        x = F.relu(self.norm1(self.conv1(x)), inplace=True)
        return F.relu(self.norm2(self.conv2(x)), inplace=True)


class UNet2d(nn.Module):
    """Encoder halves the map per level (channels double), decoder upsamples back with skips."""

    def __init__(self, in_channels: int, base_channels: int, levels: int, circular_phi: bool):
        super().__init__()
        channels = [base_channels * 2**level for level in range(levels)]
        self.encoders = nn.ModuleList()
        for out_channels in channels:
            self.encoders.append(DoubleConv(in_channels, out_channels, circular_phi))
            in_channels = out_channels
        self.decoders = nn.ModuleList(
            DoubleConv(channels[level + 1] + channels[level], channels[level], circular_phi)
            for level in reversed(range(levels - 1))
        )
        self.bottleneck_channels = channels[-1]
        self.out_channels = channels[0]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (bottleneck, last decoder map)."""
        return run_unet(self.encoders, self.decoders, x)

    def at_cells(
        self, cell_features: Tensor, cells: Tensor, shape: tuple[int, int, int]
    ) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        """The U-Net over a map of ``shape`` (batch, rows, columns) that holds ``cell_features`` at the
        occupied ``cells`` (row-major linear indices) and zeros elsewhere. Returns each cell's (batch, row,
        column) and its bottleneck and last decoder features, (U, C) each."""
        batch_size, rows, columns = shape
        grid = cell_features.new_zeros((batch_size * rows * columns, cell_features.shape[1]))
        grid[cells] = cell_features
        bottleneck, decoded = self(grid.view(batch_size, rows, columns, -1).permute(0, 3, 1, 2))
        b, row, column = unravel_index(cells, shape)
        stride = 2 ** (len(self.encoders) - 1)  # ceil-mode 2×2 pooling per level: cell i lands in i // stride
        return (b, row, column), bottleneck[b, :, row // stride, column // stride], decoded[b, :, row, column]


def run_unet(encoders: nn.ModuleList, decoders: nn.ModuleList, x: Tensor) -> tuple[Tensor, Tensor]:
    """(bottleneck, last decoder map): encoders with 2×2 ceil-mode pooling between levels, then
    decoders that upsample and concatenate the skip of the same level (also the fused network's)."""
    skips = []
    for level, encoder in enumerate(encoders):
        if level > 0:
            x = F.max_pool2d(x, 2, ceil_mode=True)
        x = encoder(x)
        skips.append(x)
    bottleneck = x
    for decoder, skip in zip(decoders, reversed(skips[:-1]), strict=True):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = decoder(torch.cat([x, skip], dim=1))
    return bottleneck, x


class PolarNet(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.grid = CylindricalGrid(config.grid_size, config.rho_range, config.z_range)
        self.point_encoder = PointEncoder(
            point_features(config.uses_texture), tuple(config.channels(c) for c in config.point_channels)
        )
        bev_channels = config.channels(config.base_channels)
        self.compress = nn.Sequential(nn.Linear(self.point_encoder.out_channels, bev_channels), nn.ReLU(inplace=True))
        bottleneck_phi_bins = -(-config.grid_size[1] // 2 ** (config.levels - 1))
        if config.circular_phi and bottleneck_phi_bins < 2:
            raise ValueError(
                f"grid_size phi = {config.grid_size[1]} is too small for {config.levels} U-Net levels "
                "with circular_phi: the bottleneck needs at least 2 phi bins"
            )
        self.unet = UNet2d(bev_channels, bev_channels, config.levels, config.circular_phi)
        self.height_bins = config.grid_size[2]
        self.head = nn.Linear(self.unet.out_channels, config.num_classes * self.height_bins)
        self.point_head = point_head(config, self.point_encoder.out_channels + self.unet.out_channels)

    def forward(self, points: Tensor, batch_index: Tensor, batch_size: int) -> ModelOutput:
        rho_bins, phi_bins, height_bins = self.config.grid_size
        location = self.grid.locate(model_columns(points, self.config.point_columns))
        i, j, k = location.cell.unbind(1)
        bev_shape = (batch_size, rho_bins, phi_bins)
        cells, point_to_cell = occupied_cells((batch_index, i, j), bev_shape)

        point_features = self.point_encoder(location.features)
        cell_features = self.compress(segment_max(point_features, point_to_cell, len(cells)))
        (cell_b, cell_i, cell_j), bottleneck_at_cells, decoded_at_cells = self.unet.at_cells(
            cell_features, cells, bev_shape
        )
        cell_logits = self.head(decoded_at_cells).view(len(cells), height_bins, -1)

        voxels, point_to_voxel = occupied_cells((point_to_cell, k), (len(cells), height_bins))
        voxel_cell, voxel_k = unravel_index(voxels, (len(cells), height_bins))
        voxel_logits = cell_logits[voxel_cell, voxel_k]
        voxel_coords = torch.stack([cell_b[voxel_cell], cell_i[voxel_cell], cell_j[voxel_cell], voxel_k], dim=1)
        features = {
            "point_mlp": point_features,
            "bev_encoder": bottleneck_at_cells[point_to_cell],
            "bev_decoder": decoded_at_cells[point_to_cell],
        }
        return ModelOutput.from_voxels(
            voxel_logits, voxel_coords, point_to_voxel, features, self.point_head, "bev_decoder"
        )
