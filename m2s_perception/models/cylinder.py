"""Cylinder3D-style backbone: points → max-pooled cylindrical voxels → asymmetric sparse 3D U-Net.

Needs ``spconv`` (extra ``m2s[spconv]``: the CPU wheel here, a CUDA wheel such as ``spconv-cu120`` on GPU).
Sparse tensors index voxels as (batch, i, j, k) over the (rho, phi, z) grid, the same order as
``ModelOutput.voxel_coords``. Submanifold convolutions keep the occupied voxels and their order, so
the output rows line up with the pooled voxels one to one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from m2s_perception.models import ModelConfig, ModelOutput, point_head
from m2s_perception.models.grid import (
    CylindricalGrid,
    PointEncoder,
    model_columns,
    occupied_cells,
    point_features,
    ravel_index,
    segment_max,
    unravel_index,
)


def _spconv():
    try:
        import spconv.pytorch as spconv
    except ImportError as err:
        raise ImportError(
            "the 'cylinder' backbone needs spconv: pip install 'm2s[spconv]' (CPU) or the spconv-cuXXX wheel "
            f"matching your CUDA ({err})"
        ) from None
    if not torch.cuda.is_available():
        # spconv 2.3's CPU backward pass still asks torch for the current CUDA stream (cf.
        # traveller59/spconv#366), which raises without CUDA; its CPU kernels never use the stream.
        import spconv.pytorch.ops as spconv_ops

        spconv_ops.get_current_stream = _no_cuda_stream
    return spconv


def _no_cuda_stream() -> int:
    return 0


def norm_act(channels: int) -> tuple[nn.Module, nn.Module]:
    """BatchNorm + LeakyReLU; inside a ``SparseSequential`` plain modules act on the features."""
    return nn.BatchNorm1d(channels), nn.LeakyReLU(inplace=True)


class AsymmetricResBlock(nn.Module):
    """Two branches of asymmetric submanifold convs, (3×1×3 → 1×3×3) and (1×3×3 → 3×1×3), summed.

    Asymmetric kernels cover the cylinder's long thin cells (along rho or along phi) at the cost
    of two 9-tap convs instead of one 27-tap one.
    """

    def __init__(self, in_channels: int, out_channels: int, level: int):
        super().__init__()
        spconv = _spconv()

        def conv(cin: int, kernel: tuple[int, int, int]) -> nn.Module:
            padding = tuple(size // 2 for size in kernel)
            key = f"subm{level}_{''.join(map(str, kernel))}"
            return spconv.SubMConv3d(cin, out_channels, kernel, padding=padding, bias=False, indice_key=key)

        rho_first, phi_first = (3, 1, 3), (1, 3, 3)
        self.branch_a = spconv.SparseSequential(
            conv(in_channels, rho_first),
            *norm_act(out_channels),
            conv(out_channels, phi_first),
            *norm_act(out_channels),
        )
        self.branch_b = spconv.SparseSequential(
            conv(in_channels, phi_first),
            *norm_act(out_channels),
            conv(out_channels, rho_first),
            *norm_act(out_channels),
        )

    def forward(self, x):
        a = self.branch_a(x)
        return a.replace_feature(a.features + self.branch_b(x).features)


class Cylinder3D(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        spconv = _spconv()
        self.config = config
        self.grid = CylindricalGrid(config.grid_size, config.rho_range, config.z_range)
        self.point_encoder = PointEncoder(
            point_features(config.uses_texture), tuple(config.channels(c) for c in config.point_channels)
        )
        channels = [config.channels(config.base_channels) * 2**level for level in range(config.levels)]
        self.compress = nn.Sequential(nn.Linear(self.point_encoder.out_channels, channels[0]), nn.ReLU(inplace=True))
        self.stem = AsymmetricResBlock(channels[0], channels[0], level=0)
        self.downs = nn.ModuleList()
        self.encoders = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(1, config.levels):
            self.downs.append(
                spconv.SparseSequential(
                    spconv.SparseConv3d(
                        channels[level - 1],
                        channels[level],
                        3,
                        stride=2,
                        padding=1,
                        bias=False,
                        indice_key=f"down{level}",
                    ),
                    *norm_act(channels[level]),
                )
            )
            self.encoders.append(AsymmetricResBlock(channels[level], channels[level], level))
            self.ups.append(
                spconv.SparseSequential(
                    spconv.SparseInverseConv3d(
                        channels[level], channels[level - 1], 3, bias=False, indice_key=f"down{level}"
                    ),
                    *norm_act(channels[level - 1]),
                )
            )
            self.decoders.append(AsymmetricResBlock(2 * channels[level - 1], channels[level - 1], level - 1))
        self.head = spconv.SubMConv3d(channels[0], config.num_classes, 3, padding=1, bias=False, indice_key="subm0_333")
        # Kept outside the conv: spconv's CPU inference path cannot fuse a bias into the conv.
        self.head_bias = nn.Parameter(torch.zeros(config.num_classes))
        self.sparse_tensor = spconv.SparseConvTensor  # a class, not the module: models stay deep-copyable
        self.point_head = point_head(config, self.point_encoder.out_channels + channels[0])

    def forward(self, points: Tensor, batch_index: Tensor, batch_size: int) -> ModelOutput:
        rho_bins, phi_bins, height_bins = self.config.grid_size
        location = self.grid.locate(model_columns(points, self.config.point_columns))
        i, j, k = location.cell.unbind(1)
        shape = (batch_size, rho_bins, phi_bins, height_bins)
        voxels, point_to_voxel = occupied_cells((batch_index, i, j, k), shape)
        voxel_coords = torch.stack(unravel_index(voxels, shape), dim=1)

        point_features = self.point_encoder(location.features)
        voxel_features = self.compress(segment_max(point_features, point_to_voxel, len(voxels)))
        x = self.sparse_tensor(voxel_features, voxel_coords.int(), [rho_bins, phi_bins, height_bins], batch_size)
        with _single_thread_on_cpu(points.device):
            bottleneck, x, voxel_logits = self._sparse_unet(x)
        features = {
            "point_mlp": point_features,
            "sparse_encoder": _coarse_features(bottleneck, voxel_coords, len(self.downs))[point_to_voxel],
            "sparse_decoder": x.features[point_to_voxel],
        }
        return ModelOutput.from_voxels(
            voxel_logits, voxel_coords, point_to_voxel, features, self.point_head, "sparse_decoder"
        )

    def _sparse_unet(self, x):
        """Return the bottleneck, the last decoder level and the voxel logits."""
        x = self.stem(x)
        skips = []
        for down, encoder in zip(self.downs, self.encoders, strict=True):
            skips.append(x)
            x = encoder(down(x))
        bottleneck = x
        for up, decoder, skip in zip(reversed(self.ups), reversed(self.decoders), reversed(skips), strict=True):
            # The inverse conv restores exactly the skip's voxels in the skip's order, so features concatenate.
            upsampled = up(x)
            x = decoder(upsampled.replace_feature(torch.cat([upsampled.features, skip.features], dim=1)))
        return bottleneck, x, self.head(x).features + self.head_bias


@contextmanager
def _single_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """spconv 2.3's multi-threaded CPU kernels race: repeated forwards of one input differ by up to
    ~20% of the logits. One thread makes them deterministic; CUDA is unaffected."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _coarse_features(coarse, fine_coords: Tensor, num_downsamples: int) -> Tensor:
    """Features of the coarse voxel covering each fine voxel (stride-2, pad-1 convs: coarse = fine // 2 per step)."""
    shape = torch.tensor([coarse.batch_size, *coarse.spatial_shape], device=fine_coords.device)
    target = fine_coords.clone()
    target[:, 1:] //= 2**num_downsamples
    target = torch.minimum(target, shape - 1)

    keys, order = torch.sort(ravel_index(coarse.indices.long().unbind(1), shape))
    rows = torch.searchsorted(keys, ravel_index(target.unbind(1), shape)).clamp_max(len(keys) - 1)
    return coarse.features[order[rows]]
