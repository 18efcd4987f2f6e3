"""The polar network for inference: BatchNorm folded away, channel-first, integer bins as inputs.

``FusedPolarNet(PolarNet)`` computes the same point logits as ``PolarNet.forward`` (up to float
rounding) from what ``m2s_perception.binning.PolarBinning`` gives it. It is what every inference
backend runs: torch directly, ONNX Runtime and OpenVINO through its ONNX export. Differences from
the training network, all for speed:

- every BatchNorm is folded into the convolution / linear layer next to it (eval statistics);
- the point MLP, the pooling and the bird's-eye view are channel-first (C, N), (C, U), (C, rho·phi):
  no layout conversion between the points and the U-Net;
- the scatter max starts from -inf and includes it (``include_self=True``): the same result as
  ``segment_max`` (every occupied cell has a point), and it exports as ONNX ScatterElements
  with reduction "max" (opset 18);
- only the point logits are computed (no voxel unique, no distillation features), and the labels
  and confidences come out of the network, so an engine hands back N labels, not N × classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2s_perception.labels import IGNORE_ID
from m2s_perception.models.polar import DoubleConv, PolarNet, UNet2d


def fold_batchnorm(weight: Tensor, bias: Tensor | None, norm: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(weight, bias) of a conv/linear layer followed by ``norm`` in eval mode, as one layer."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = torch.zeros_like(norm.running_mean) if bias is None else bias
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.view(shape), (bias - norm.running_mean) * scale + norm.bias


def fold_input_batchnorm(linear: nn.Linear, norm: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """(weight, bias) of ``linear(norm(x))`` as one linear layer: the norm is x * s + t."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
    return linear.weight * scale, bias + linear.weight @ shift


class ScatterMax(torch.autograd.Function):
    """``data.scatter_reduce(1, index, src, "amax", include_self=True)``, exported as one ONNX node.

    The TorchScript exporter wraps scatter_reduce in an ``If`` (for rank-0 inputs) that TensorRT
    dislikes and that carries a wrong shape annotation; this writes the single ScatterElements.
    """

    @staticmethod
    def forward(ctx, data: Tensor, index: Tensor, src: Tensor) -> Tensor:
        return data.scatter_reduce(1, index, src, reduce="amax", include_self=True)

    @staticmethod
    def symbolic(g, data, index, src):
        return g.op("ScatterElements", data, index, src, axis_i=1, reduction_s="max")


class FusedDoubleConv(nn.Module):
    def __init__(self, block: DoubleConv):
        super().__init__()
        self.circular_phi = block.circular_phi
        self.conv1 = _fused_conv(block.conv1, block.norm1)
        self.conv2 = _fused_conv(block.conv2, block.norm2)

    def forward(self, x: Tensor) -> Tensor:
        if self.circular_phi:
            # The two phi columns each side, concatenated: what F.pad(mode="circular") does, spelled
            # out so that every exporter writes it the same way (Slice + Concat).
            x = torch.cat([x[..., -2:], x, x[..., :2]], dim=-1)
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class FusedUNet2d(nn.Module):
    def __init__(self, unet: UNet2d):
        super().__init__()
        self.encoders = nn.ModuleList(FusedDoubleConv(block) for block in unet.encoders)
        self.decoders = nn.ModuleList(FusedDoubleConv(block) for block in unet.decoders)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = encoder(x)
            skips.append(x)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = decoder(torch.cat([x, skip], dim=1))
        return x


class FusedPolarNet(nn.Module):
    """(features (9, N), point_cell (N,), point_voxel (N,), cells (U,)) → labels, confidence, logits."""

    def __init__(self, model: PolarNet):
        super().__init__()
        model = model.eval()
        self.grid_size = model.config.grid_size
        self.height_bins = model.height_bins
        with torch.no_grad():
            self.point_mlp = nn.ParameterList(_fused_point_mlp(model.point_encoder.mlp))
            compress = model.compress[0]
            self.compress_weight = nn.Parameter(compress.weight.clone())
            self.compress_bias = nn.Parameter(compress.bias.clone().view(-1, 1))
            self.unet = FusedUNet2d(model.unet)
            self.head_weight = nn.Parameter(model.head.weight.clone())  # (H * classes, C)
            self.head_bias = nn.Parameter(model.head.bias.clone())
        self.requires_grad_(False)

    def forward(
        self, features: Tensor, point_cell: Tensor, point_voxel: Tensor, cells: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        rho_bins, phi_bins, _ = self.grid_size
        x = features
        layers = len(self.point_mlp) // 2
        for index in range(layers):
            x = torch.addmm(self.point_mlp[2 * index + 1], self.point_mlp[2 * index], x)
            if index < layers - 1:
                x = F.relu(x)
        # Max over each cell's points; every cell in ``cells`` has at least one point, so -inf never survives.
        pooled = torch.full((x.shape[0], cells.shape[0]), float("-inf"), dtype=x.dtype, device=x.device)
        pooled = ScatterMax.apply(pooled, point_cell.unsqueeze(0).expand_as(x), x)
        cell_features = F.relu(torch.addmm(self.compress_bias, self.compress_weight, pooled))  # (C, U)

        channels = cell_features.shape[0]
        bev = cell_features.new_zeros((channels, rho_bins * phi_bins))
        bev = bev.scatter(1, cells.unsqueeze(0).expand(channels, -1), cell_features)
        decoded = self.unet(bev.view(1, channels, rho_bins, phi_bins))

        decoded_at_cells = decoded.view(decoded.shape[1], rho_bins * phi_bins).index_select(1, cells)  # (C, U)
        cell_logits = torch.addmm(self.head_bias, decoded_at_cells.t(), self.head_weight.t())  # (U, H * classes)
        point_logits = cell_logits.view(-1, self.head_weight.shape[0] // self.height_bins).index_select(0, point_voxel)
        labels = point_logits[:, IGNORE_ID + 1 :].argmax(dim=1, keepdim=True) + (IGNORE_ID + 1)
        confidence = torch.softmax(point_logits, dim=1).gather(1, labels)
        return labels.squeeze(1), confidence.squeeze(1), point_logits


def _fused_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=True)
    weight, bias = fold_batchnorm(conv.weight, conv.bias, norm)
    fused.weight.copy_(weight)
    fused.bias.copy_(bias)
    return fused


def _fused_point_mlp(mlp: nn.Sequential) -> list[nn.Parameter]:
    """[W1, b1, W2, b2, …] (b as columns) of BatchNorm1d → (Linear → BatchNorm1d → ReLU)* → Linear."""
    layers = list(mlp)
    input_norm, layers = layers[0], layers[1:]
    params: list[nn.Parameter] = []
    first = True
    while layers:
        linear, layers = layers[0], layers[1:]
        if first:
            weight, bias = fold_input_batchnorm(linear, input_norm)
            first = False
        else:
            weight, bias = linear.weight, linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
        if layers and isinstance(layers[0], nn.BatchNorm1d):
            weight, bias = fold_batchnorm(weight, bias, layers[0])
            layers = layers[2:]  # the norm and its ReLU
        params += [nn.Parameter(weight.clone()), nn.Parameter(bias.clone().view(-1, 1))]
    return params
