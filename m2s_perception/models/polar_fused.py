"""The polar network for inference: BatchNorm folded away, integer bins as inputs, labels as outputs.

``FusedPolarNet(PolarNet)`` computes the same point logits as ``PolarNet.forward`` (up to float
rounding) from what ``m2s_perception.binning.PolarBinning`` gives it (``FusedPolarEnsemble``: an
``Ensemble`` of them, probabilities averaged; ``fuse_polar`` picks). It is what every inference
backend runs: torch directly, ONNX Runtime and OpenVINO through its ONNX export. Differences from
the training network, all for speed:

- every BatchNorm is folded into the convolution / linear layer next to it (eval statistics);
- the cell max pooling starts from -inf and includes it: the same result as ``segment_max``
  (every occupied cell has a point); torch moves whole rows (``index_reduce``); the ONNX form is
  one ScatterND "max" over rows (``pooling="rows"``, OpenVINO) or one ScatterElements "max"
  (``pooling="elements"``, ONNX Runtime, whose ScatterND races), opset 18; the pooled cells go
  into the bird's-eye view as rows too (ScatterND without reduction: cells are unique);
- only the point logits are computed (no voxel unique, no distillation features), and the labels
  and confidences come out of the network, so an engine hands back N labels, not N × classes.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2s_perception.labels import IGNORE_ID
from m2s_perception.models.ensemble import Ensemble, mean_probability_logits
from m2s_perception.models.polar import DoubleConv, PolarNet, UNet2d, run_unet


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
    bias = linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)
    return linear.weight * scale, bias + linear.weight @ shift


# index_reduce is what makes the pooling fast in torch (a (N,) index, no (N, C) one); torch marks it beta.
warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta", category=UserWarning)


POOLINGS = ("rows", "elements")


def _rows(g, index):
    """ONNX: (N,) → (N, 1), the row indices ScatterND takes."""
    return g.op("Unsqueeze", index, g.op("Constant", value_t=torch.tensor([1])))


class MaxIntoRows(torch.autograd.Function):
    """``data.index_reduce(0, index, src, "amax", include_self=True)``: row ``index[n]`` of data takes the
    element-wise max with row n of src. Exported as one ScatterND with reduction "max" (opset 18),
    which moves whole rows: no (N, C) index tensor, unlike ScatterElements."""

    @staticmethod
    def forward(ctx, data: Tensor, index: Tensor, src: Tensor) -> Tensor:
        return data.index_reduce(0, index, src, "amax", include_self=True)

    @staticmethod
    def symbolic(g, data, index, src):
        return g.op("ScatterND", data, _rows(g, index), src, reduction_s="max")


class MaxIntoElements(torch.autograd.Function):
    """The same max pooling, exported as ScatterElements with reduction "max" over an (N, C) index.

    Slower in every engine (the index is N × C int64), but ONNX Runtime's ScatterND with a
    reduction races between threads on repeated rows (measured: wrong maxima in some runs), while
    its ScatterElements does not; so the ONNX Runtime backend and m2s-export's file use this one.
    """

    @staticmethod
    def forward(ctx, data: Tensor, index: Tensor, src: Tensor) -> Tensor:
        return data.index_reduce(0, index, src, "amax", include_self=True)

    @staticmethod
    def symbolic(g, data, index, src):
        expanded = g.op("Expand", _rows(g, index), g.op("Shape", src))
        return g.op("ScatterElements", data, expanded, src, axis_i=0, reduction_s="max")


class CopyIntoRows(torch.autograd.Function):
    """``data.index_copy(0, index, src)``, exported as one ScatterND."""

    @staticmethod
    def forward(ctx, data: Tensor, index: Tensor, src: Tensor) -> Tensor:
        return data.index_copy(0, index, src)

    @staticmethod
    def symbolic(g, data, index, src):
        return g.op("ScatterND", data, _rows(g, index), src)


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
        return F.relu(self.conv2(F.relu(self.conv1(x), inplace=True)), inplace=True)


class FusedUNet2d(nn.Module):
    def __init__(self, unet: UNet2d):
        super().__init__()
        self.encoders = nn.ModuleList(FusedDoubleConv(block) for block in unet.encoders)
        self.decoders = nn.ModuleList(FusedDoubleConv(block) for block in unet.decoders)

    def forward(self, x: Tensor) -> Tensor:
        return run_unet(self.encoders, self.decoders, x)[1]


class FusedPolarNet(nn.Module):
    """(features (9 or 10, N), point_cell (N,), point_voxel (N,), cells (U,)) → labels, confidence, logits."""

    def __init__(self, model: PolarNet, pooling: str = "rows"):
        """``pooling``: how the cell max exports to ONNX: "rows" (ScatterND) or "elements" (ScatterElements)."""
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pool = MaxIntoRows if pooling == "rows" else MaxIntoElements
        model = model.eval()
        self.grid_size = model.config.grid_size
        self.height_bins = model.height_bins
        with torch.no_grad():
            self.point_mlp = nn.ModuleList(_fused_point_mlp(model.point_encoder.mlp))
            self.compress = _copy_linear(model.compress[0])
            self.unet = FusedUNet2d(model.unet)
            self.head = _copy_linear(model.head)  # (H * classes) outputs per cell
            self.point_head = None
            if model.point_head is not None:  # Linear → ReLU → Linear, no norms to fold
                first, _, last = model.point_head
                self.point_head = nn.ModuleList([_copy_linear(first), _copy_linear(last)])
        self.requires_grad_(False)

    def forward(
        self, features: Tensor, point_cell: Tensor, point_voxel: Tensor, cells: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return labels_and_confidence(self.point_logits(features, point_cell, point_voxel, cells))

    def point_logits(self, features: Tensor, point_cell: Tensor, point_voxel: Tensor, cells: Tensor) -> Tensor:
        rho_bins, phi_bins, _ = self.grid_size
        x = features.t()  # (N, 9 or 10): the binning writes channel-first, the point MLP runs row-wise
        for index, layer in enumerate(self.point_mlp):
            x = layer(x)
            if index < len(self.point_mlp) - 1:
                x = F.relu(x, inplace=True)
        # Max over each cell's points; every cell in ``cells`` has at least one point, so -inf never survives.
        pooled = torch.full((cells.shape[0], x.shape[1]), float("-inf"), dtype=x.dtype, device=x.device)
        pooled = self.pool.apply(pooled, point_cell, x)
        cell_features = F.relu(self.compress(pooled))  # (U, C)

        channels = cell_features.shape[1]
        bev = CopyIntoRows.apply(cell_features.new_zeros((rho_bins * phi_bins, channels)), cells, cell_features)
        decoded = self.unet(bev.t().reshape(1, channels, rho_bins, phi_bins))

        decoded_at_cells = decoded.view(decoded.shape[1], rho_bins * phi_bins).index_select(1, cells)  # (C, U)
        cell_logits = self.head(decoded_at_cells.t())  # (U, H * classes)
        point_logits = cell_logits.view(-1, self.head.out_features // self.height_bins).index_select(0, point_voxel)
        if self.point_head is not None:  # each point's own correction, from its features and its cell's
            own = torch.cat([x, decoded_at_cells.t().index_select(0, point_cell)], dim=1)
            point_logits = point_logits + self.point_head[1](F.relu(self.point_head[0](own)))
        return point_logits


class FusedPolarEnsemble(nn.Module):
    """An ``Ensemble`` of polar networks, each fused; same inputs and outputs as ``FusedPolarNet``."""

    def __init__(self, ensemble: Ensemble, pooling: str = "rows"):
        super().__init__()
        self.members = nn.ModuleList(FusedPolarNet(member, pooling) for member in ensemble.members)

    def forward(
        self, features: Tensor, point_cell: Tensor, point_voxel: Tensor, cells: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        logits = [member.point_logits(features, point_cell, point_voxel, cells) for member in self.members]
        return labels_and_confidence(mean_probability_logits(logits))


def fuse_polar(model: nn.Module, pooling: str = "rows") -> FusedPolarNet | FusedPolarEnsemble:
    """The inference network of a ``PolarNet`` or of an ``Ensemble`` of them."""
    if isinstance(model, Ensemble):
        return FusedPolarEnsemble(model, pooling)
    return FusedPolarNet(model, pooling)


def labels_and_confidence(point_logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Argmax over the real classes (never 'unlabeled'), its softmax probability, and the logits."""
    labels = point_logits[:, IGNORE_ID + 1 :].argmax(dim=1, keepdim=True) + (IGNORE_ID + 1)
    confidence = torch.softmax(point_logits, dim=1).gather(1, labels)
    return labels.squeeze(1), confidence.squeeze(1), point_logits


def _copy_linear(layer: nn.Linear, weight: Tensor | None = None, bias: Tensor | None = None) -> nn.Linear:
    weight = layer.weight if weight is None else weight
    if bias is None:
        bias = layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
    copy = nn.Linear(layer.in_features, layer.out_features, bias=True)
    copy.weight.copy_(weight)
    copy.bias.copy_(bias)
    return copy


def _fused_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=True)
    weight, bias = fold_batchnorm(conv.weight, conv.bias, norm)
    fused.weight.copy_(weight)
    fused.bias.copy_(bias)
    return fused


def _fused_point_mlp(mlp: nn.Sequential) -> list[nn.Linear]:
    """The linear layers of BatchNorm1d → (Linear → BatchNorm1d → ReLU)* → Linear, norms folded in."""
    layers = list(mlp)
    input_norm, layers = layers[0], layers[1:]
    fused: list[nn.Linear] = []
    while layers:
        linear, layers = layers[0], layers[1:]
        if not fused:
            weight, bias = fold_input_batchnorm(linear, input_norm)
        else:
            weight = linear.weight
            bias = linear.bias if linear.bias is not None else weight.new_zeros(linear.out_features)
        if layers and isinstance(layers[0], nn.BatchNorm1d):
            weight, bias = fold_batchnorm(weight, bias, layers[0])
            layers = layers[2:]  # the norm and its ReLU
        fused.append(_copy_linear(linear, weight, bias))
    return fused
