"""One way to segment a cloud: numpy (N, 4) in, training ids 1..19 and confidence out.

The node, ``m2s-eval`` and ``m2s-bag evaluate`` all call ``Segmenter.predict``, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from m2s_perception.checkpoint import load_model, resolve_device
from m2s_perception.labels import IGNORE_ID
from m2s_perception.models import ModelConfig


@dataclass
class Prediction:
    labels: np.ndarray  # (N,) uint8 training ids in 1..19
    confidence: np.ndarray  # (N,) float32 softmax probability of the label (over all classes)


def labels_from_logits(point_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax over the real classes (never 'unlabeled') and that class's softmax probability."""
    point_logits = point_logits.float()
    labels = point_logits[:, IGNORE_ID + 1 :].argmax(dim=1) + IGNORE_ID + 1
    confidence = torch.softmax(point_logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    return labels, confidence


class Segmenter:
    def __init__(
        self, model: nn.Module, config: ModelConfig, device: str | torch.device = "auto", fp16: bool | None = None
    ):
        self.device = resolve_device(device)
        self.fp16 = self.device.type == "cuda" if fp16 is None else fp16 and self.device.type == "cuda"
        self.model = model.to(self.device).eval()
        self.config = config

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", fp16: bool | None = None) -> Segmenter:
        """``fp16=None`` → half-precision autocast on CUDA; CPU always runs float32."""
        model, config, _meta = load_model(path, resolve_device(device))
        return cls(model, config, device, fp16)

    def predict(self, points: np.ndarray) -> Prediction:
        points = _checked_cloud(points)
        if len(points) == 0:
            return Prediction(np.zeros(0, np.uint8), np.zeros(0, np.float32))
        cloud = torch.from_numpy(points).to(self.device, non_blocking=True)
        batch_index = torch.zeros(len(cloud), dtype=torch.long, device=self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, torch.float16, enabled=self.fp16):
            output = self.model(cloud, batch_index, 1)
            labels, confidence = labels_from_logits(output.point_logits)
        return Prediction(labels.to(torch.uint8).cpu().numpy(), confidence.cpu().numpy().astype(np.float32))

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
