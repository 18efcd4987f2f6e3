"""Range-view backbone: points → max-pooled spherical image (rows: elevation, columns: azimuth) → 2D U-Net.

A spinning LiDAR writes its scan as such an image: neighbouring returns of one beam sit side by side at the
sensor's own resolution, so the network sees how rough a surface looks along the scan line (grass against
pavement on real scans; m2s_perception/texture.py measures it by hand) together with what lies above and
beside it. The polar backbone sees the scan from above in 0.4 m × 2° cells and cannot.

Every point falls into one pixel (points above or below the elevation range into the border rows); the
pixel's logits are the point's. The U-Net is the polar backbone's, wrapping around in azimuth.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from m2s_perception.models import ModelConfig, ModelOutput, point_head
from m2s_perception.models.grid import PointEncoder, model_columns, occupied_cells, segment_max
from m2s_perception.models.polar import UNet2d

IMAGE_FEATURES = 7  # x, y, z, distance, remission, offset to the pixel centre (row, column)


class SphericalImage:
    """Pixel of every point in an image of ``size`` (rows, columns) spanning ``elevation_range`` (degrees)."""

    def __init__(self, size: tuple[int, int], elevation_range: tuple[float, float]):
        self.rows, self.columns = size
        self.lowest = math.radians(elevation_range[0])
        self.row_height = math.radians(elevation_range[1] - elevation_range[0]) / self.rows
        self.column_width = 2 * math.pi / self.columns

    def locate(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(row, column, features): row 0 is the highest beam; columns run with azimuth from −π."""
        xyz, remission = points[:, :3], points[:, 3:4]
        horizontal = torch.hypot(xyz[:, 0], xyz[:, 1])
        distance = torch.hypot(horizontal, xyz[:, 2])
        elevation = torch.atan2(xyz[:, 2], horizontal)
        azimuth = torch.atan2(xyz[:, 1], xyz[:, 0])
        from_bottom = torch.floor((elevation - self.lowest) / self.row_height).long().clamp(0, self.rows - 1)
        column = torch.floor((azimuth + math.pi) / self.column_width).long().clamp(0, self.columns - 1)
        # offsets in pixels: where in its pixel a point lies (beyond ±0.5 for points clamped to a border row)
        row_offset = (elevation - self.lowest) / self.row_height - (from_bottom.to(points.dtype) + 0.5)
        column_offset = (azimuth + math.pi) / self.column_width - (column.to(points.dtype) + 0.5)
        features = torch.cat(
            [xyz, distance[:, None], remission, row_offset[:, None], column_offset[:, None], points[:, 4:]], dim=1
        )
        return self.rows - 1 - from_bottom, column, features


class RangeNet(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.image = SphericalImage(config.image_size, config.elevation_range)
        in_features = IMAGE_FEATURES + int(config.uses_texture)
        self.point_encoder = PointEncoder(in_features, tuple(config.channels(c) for c in config.point_channels))
        channels = config.channels(config.base_channels)
        self.compress = nn.Sequential(nn.Linear(self.point_encoder.out_channels, channels), nn.ReLU(inplace=True))
        self.unet = UNet2d(channels, channels, config.levels, circular_phi=True)
        self.head = nn.Linear(self.unet.out_channels, config.num_classes)
        self.point_head = point_head(config, self.point_encoder.out_channels + self.unet.out_channels)

    def forward(self, points: Tensor, batch_index: Tensor, batch_size: int) -> ModelOutput:
        rows, columns = self.config.image_size
        row, column, features = self.image.locate(model_columns(points, self.config.point_columns))
        shape = (batch_size, rows, columns)
        pixels, point_to_pixel = occupied_cells((batch_index, row, column), shape)

        point_features = self.point_encoder(features)
        pixel_features = self.compress(segment_max(point_features, point_to_pixel, len(pixels)))
        (pixel_b, pixel_row, pixel_column), bottleneck_at_pixels, decoded_at_pixels = self.unet.at_cells(
            pixel_features, pixels, shape
        )
        pixel_logits = self.head(decoded_at_pixels)
        # voxel coordinates as the other backbones give them: batch, row, column, one height bin
        coords = torch.stack([pixel_b, pixel_row, pixel_column, torch.zeros_like(pixel_b)], dim=1)
        features = {
            "point_mlp": point_features,
            "bev_encoder": bottleneck_at_pixels[point_to_pixel],
            "bev_decoder": decoded_at_pixels[point_to_pixel],
        }
        return ModelOutput.from_voxels(pixel_logits, coords, point_to_pixel, features, self.point_head, "bev_decoder")
