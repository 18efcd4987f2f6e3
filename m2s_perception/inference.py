"""One way to segment a cloud: numpy (N, 4) in, training ids 1..19 and confidence out.

The node, ``m2s-eval`` and ``m2s-bag evaluate`` all call ``Segmenter.predict``, so they agree.
A polar model runs as ``FusedPolarNet`` (BatchNorm folded) on numpy binning, through the engine
``backend`` names: ``torch``, ``onnxruntime`` or ``openvino`` (m2s_perception/backends.py). The
cylinder and range-view backbones run their training network in torch (they have no ONNX form).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from m2s_perception.backends import BACKENDS, OnnxRuntimeBackend, OpenVinoBackend, TorchBackend
from m2s_perception.binning import PolarBinning
from m2s_perception.checkpoint import CheckpointError, load_model, resolve_device
from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.levelling import GroundFit, fit_ground, level_on
from m2s_perception.models import ModelConfig
from m2s_perception.models.ensemble import first_members
from m2s_perception.models.polar_fused import fuse_polar, labels_and_confidence
from m2s_perception.remission import scale_remission
from m2s_perception.texture import with_texture

# The largest scan a TensorRT engine is built for (m2s-segment's max_points default).
TENSORRT_MAX_POINTS = 500_000


@dataclass
class Prediction:
    labels: np.ndarray  # (N,) uint8 training ids in 1..19
    confidence: np.ndarray  # (N,) float32 softmax probability of the label (over all classes)


def labels_from_logits(point_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax over the real classes (never 'unlabeled') and that class's softmax probability, in float32
    (the fused networks' own rule, ``labels_and_confidence``, on logits that may come out of autocast)."""
    labels, confidence, _ = labels_and_confidence(point_logits.float())
    return labels, confidence


class Segmenter:
    """``backend``: torch | onnxruntime | openvino. ``num_threads``: CPU threads of the engine
    (torch: ``torch.set_num_threads``, which is process-wide); ``None`` or 0 = the library's default.
    ``fp16=None`` (precision auto): float32 for the torch engine, whose fp16 autocast was slower on an
    H100 for every shipped model (docs/benchmarks.md "GPU"); TensorRT fp16 for ONNX Runtime on CUDA.
    CPUs always run float32. ``level_ground``: rotate each scan about the sensor so that its ground
    plane is level before the network sees it (m2s_perception/levelling.py; labels keep point order).
    """

    def __init__(
        self,
        model: nn.Module | None,
        config: ModelConfig,
        device: str | torch.device = "auto",
        fp16: bool | None = None,
        backend: str = "torch",
        num_threads: int | None = None,
        onnx_model: bytes | None = None,
        level_ground: bool = True,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if num_threads is not None and num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0: library default), got {num_threads}")
        self.device = resolve_device(device)
        half_by_default = backend != "torch"
        self.fp16 = self.device.type == "cuda" and (half_by_default if fp16 is None else fp16)
        self.config, self.backend, self.level_ground = config, backend, level_ground
        self.model = model.eval() if model is not None else None
        if backend == "torch" and num_threads:
            torch.set_num_threads(num_threads)
        self.binning = PolarBinning(config) if config.backbone == "polar" else None
        if self.binning is None:
            if backend != "torch":
                raise ValueError(
                    f"backend {backend!r} needs a polar model; the {config.backbone!r} backbone "
                    "has no ONNX form: use backend 'torch'"
                )
            self.model.to(self.device)
            self.engine = None
        elif backend == "torch":
            if self.model is None:
                raise ValueError("an exported .onnx model runs with backend 'onnxruntime' or 'openvino', not 'torch'")
            self.engine = TorchBackend(fuse_polar(self.model), self.device, self.fp16)
        else:
            if onnx_model is None:
                from m2s_perception.export import export_onnx

                # ScatterND pooling is faster but races in ONNX Runtime's CPU kernel (see polar_fused.py).
                onnx_model = export_onnx(self.model, config, pooling="rows" if backend == "openvino" else "elements")
            engine = OnnxRuntimeBackend if backend == "onnxruntime" else OpenVinoBackend
            self.engine = engine(onnx_model, self.device.type, num_threads or None, self.fp16, TENSORRT_MAX_POINTS)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        fp16: bool | None = None,
        backend: str = "torch",
        num_threads: int | None = None,
        label_map: LabelMap | None = None,
        members: int | None = None,
        level_ground: bool = True,
    ) -> Segmenter:
        """A checkpoint (.pt), or an ``m2s-export`` file (.onnx) for the onnxruntime / openvino backends.

        ``label_map`` (default: the packaged one) must have the model's classes, else ``CheckpointError``.
        ``members``: of an ensemble checkpoint, run only the first ``members`` networks (None: all).
        """
        if Path(path).suffix == ".onnx":
            if members is not None:
                raise ValueError(
                    f"{path}: an exported file runs all its networks; choose ensemble members before m2s-export"
                )
            from m2s_perception.export import read_metadata

            if not Path(path).is_file():
                raise FileNotFoundError(f"model not found: {path}")
            onnx_model = Path(path).read_bytes()
            config, class_names, pooling = read_metadata(onnx_model)
            if backend == "onnxruntime" and pooling != "elements":
                raise ValueError(
                    f"{path}: exported with --pooling {pooling}, which ONNX Runtime computes wrongly "
                    "(its ScatterND max races); use backend 'openvino' or export with --pooling elements"
                )
            expected = list((label_map or load_label_map()).class_names)
            if class_names and class_names != expected:
                raise CheckpointError(f"{path}: its classes {class_names} differ from the label map's {expected}")
            return cls(None, config, device, fp16, backend, num_threads, onnx_model, level_ground)
        model, config, _meta = load_model(path, resolve_device(device), label_map)
        if members is not None:
            model, config = first_members(model, members, path)
        return cls(model, config, device, fp16, backend, num_threads, level_ground=level_ground)

    def describe(self) -> str:
        """Which engine runs the model, for logs: e.g. 'onnxruntime 1.32.0 on cpu'."""
        engine = self.engine.version if self.engine is not None else torch.__version__
        networks = f", {self.config.members} networks averaged" if self.config.members > 1 else ""
        levelled = ", ground levelled" if self.level_ground else ""
        return f"{self.backend} {engine} on {self.device.type}{' fp16' if self.fp16 else ''}{networks}{levelled}"

    def predict(self, points: np.ndarray, ring: np.ndarray | None = None) -> Prediction:
        """Labels and confidence of (N, 4) ``points`` (x, y, z, remission). ``ring``: each point's beam
        index, if the sensor gives one; a model with the surface texture then reads column-major
        clouds ring by ring (without it, it takes the points in their order as ring-major)."""
        points = _checked_cloud(points)
        if len(points) == 0:
            return Prediction(np.zeros(0, np.uint8), np.zeros(0, np.float32))
        points = self.prepare(points, ring)
        if self.engine is not None:
            out = self.engine.run(self.binning(points), logits=False)
            return Prediction(out.labels.astype(np.uint8), out.confidence.astype(np.float32, copy=False))
        labels, confidence = labels_from_logits(self._network_logits(points))  # in float32 (it casts)
        return Prediction(labels.to(torch.uint8).cpu().numpy(), confidence.cpu().numpy().astype(np.float32))

    def point_logits(self, prepared: np.ndarray) -> np.ndarray:
        """(N, C) float32 logits of points already through ``prepare``, from the engine ``predict`` runs."""
        if self.engine is not None:
            return self.engine.run(self.binning(prepared), logits=True).point_logits.astype(np.float32, copy=False)
        return self._network_logits(prepared).float().cpu().numpy()

    def _network_logits(self, prepared: np.ndarray) -> torch.Tensor:
        """The training network's point logits (backbones without an engine: cylinder, range view)."""
        cloud = torch.from_numpy(prepared).to(self.device, non_blocking=True)
        batch_index = torch.zeros(len(cloud), dtype=torch.long, device=self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, torch.float16, enabled=self.fp16):
            return self.model(cloud, batch_index, 1).point_logits

    def prepare(self, points: np.ndarray, ring: np.ndarray | None = None) -> np.ndarray:
        """Checked (N, 4) ``points`` as the network gets them: ``network_input``, then levelled. The ground
        plane is fitted once, for the levelling and for a texture gated on it alike."""
        if not self.level_ground:
            return network_input(points, self.config, ring)
        ground = fit_ground(points)  # from x, y, z only: what network_input adds or rescales does not move it
        return level_on(network_input(points, self.config, ring, ground), ground)

    def warmup(self, num_points: int = 20000, seed: int = 0) -> None:
        """One forward on a synthetic ring of points: pays CUDA context / kernel selection up front."""
        rng = np.random.default_rng(seed)
        rho = rng.uniform(*self.config.rho_range, num_points)
        phi = rng.uniform(-np.pi, np.pi, num_points)
        z = rng.uniform(*self.config.z_range, num_points)
        cloud = np.stack([rho * np.cos(phi), rho * np.sin(phi), z, rng.uniform(0, 1, num_points)], axis=1)
        self.predict(cloud.astype(np.float32))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def network_input(
    points: np.ndarray, config: ModelConfig, ring: np.ndarray | None = None, ground: GroundFit | None = None
) -> np.ndarray:
    """(N, 4) ``points`` in the sensor's order with what ``config``'s model eats besides them: the
    surface texture where it eats one (from the points in the sensor's order, before anything moves
    them) and remission on its scale where it has one. Levelling is the Segmenter's choice, not here.
    ``ground``: the scan's ground plane where the caller has fitted it (None: fitted here if needed)."""
    if config.remission_reference is not None:
        points = scale_remission(points, config.remission_reference)
    if config.uses_texture:
        points = with_texture(
            points,
            config.texture_step,
            ring,
            config.texture_floor,
            config.texture_ground_band,
            config.texture_quiet_bound,
            ground,
        )
    return points


def _checked_cloud(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"expected points of shape (N, 4) [x, y, z, remission], got {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise ValueError(f"expected numeric points, got dtype {points.dtype}")
    points = np.ascontiguousarray(points, dtype=np.float32)
    if not np.isfinite(points).all():
        raise ValueError("points contain NaN or infinite values; drop them before predicting")
    return points
