"""The engines that run the fused polar network: torch, ONNX Runtime, OpenVINO.

Each takes a ``BinnedScan`` (m2s_perception/binning.py) and returns per-point labels and
confidences; all three run the same ``FusedPolarNet`` (the engines through its ONNX export, made in
memory by ``m2s_perception.export``), so they agree with each other and with training to float
rounding. Device and precision per engine:

- ``torch``: CPU float32, or CUDA with fp16 autocast;
- ``onnxruntime``: CPU float32; on ``cuda`` the TensorRT execution provider (fp16 when asked) with
  the CUDA provider behind it for whatever TensorRT does not take, then the CPU. Needs the
  ``onnxruntime-gpu`` wheel (and TensorRT's libraries for the TensorRT provider);
- ``openvino``: CPU float32 (pinned: OpenVINO would pick bfloat16 on CPUs that have it), or its
  ``GPU`` plugin (Intel GPUs) in fp16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from m2s_perception.binning import BinnedScan
from m2s_perception.models.polar_fused import FusedPolarEnsemble, FusedPolarNet

BACKENDS = ("torch", "onnxruntime", "openvino")


def _import_engine(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise RuntimeError(
            f"backend {name!r} is not installed: pip install 'm2s_perception[engine]' (or pip install {name})"
        ) from None


@dataclass
class EngineOutput:
    labels: np.ndarray  # (N,) training ids (int64 from the engines; the caller narrows)
    confidence: np.ndarray  # (N,) float32
    point_logits: np.ndarray | None = None  # (N, classes), only when asked for


class TorchBackend:
    name = "torch"

    def __init__(self, network: FusedPolarNet | FusedPolarEnsemble, device: torch.device, fp16: bool):
        self.network = network.to(device).eval()
        self.device, self.fp16 = device, fp16
        self.version = torch.__version__

    def run(self, scan: BinnedScan, logits: bool = True) -> EngineOutput:
        inputs = (scan.features, scan.point_cell, scan.point_voxel, scan.cells)
        inputs = [torch.from_numpy(a).to(self.device, non_blocking=True) for a in inputs]
        with torch.inference_mode(), torch.autocast(self.device.type, torch.float16, enabled=self.fp16):
            labels, confidence, point_logits = self.network(*inputs)
        return EngineOutput(
            labels.cpu().numpy(),
            confidence.float().cpu().numpy(),
            point_logits.float().cpu().numpy() if logits else None,
        )


def onnx_inputs(scan: BinnedScan) -> dict[str, np.ndarray]:
    """The exported model's inputs by name (``m2s_perception.export`` names them so)."""
    names = ("features", "point_cell", "point_voxel", "cells")
    return {name: getattr(scan, name) for name in names}


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        model: bytes,
        device: str = "cpu",
        num_threads: int | None = None,
        fp16: bool = False,
        max_points: int = 500_000,
    ):
        ort = _import_engine("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        if device.startswith("cuda"):
            wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
            missing = [p for p in wanted if p not in ort.get_available_providers()]
            if "CUDAExecutionProvider" in missing:
                raise RuntimeError(
                    f"backend 'onnxruntime' on {device!r} needs the onnxruntime-gpu wheel (providers here: "
                    f"{', '.join(ort.get_available_providers())})"
                )
            device_id = int(device.split(":")[1]) if ":" in device else 0

            from m2s_perception.export import read_metadata
            from m2s_perception.models.grid import point_features

            rows = point_features(read_metadata(model)[0].uses_texture)

            # One engine for every scan size up to max_points (else TensorRT rebuilds per new size).
            def shapes(n: int) -> str:
                return f"features:{rows}x{n},point_cell:{n},point_voxel:{n},cells:{n}"

            tensorrt = {
                "device_id": device_id,
                "trt_fp16_enable": fp16,
                "trt_engine_cache_enable": True,
                "trt_profile_min_shapes": shapes(1),
                "trt_profile_opt_shapes": shapes(120_000),
                "trt_profile_max_shapes": shapes(max_points),
            }
            providers = [
                ("TensorrtExecutionProvider", tensorrt),
                ("CUDAExecutionProvider", {"device_id": device_id}),
                "CPUExecutionProvider",
            ]
            providers = [p for p in providers if (p if isinstance(p, str) else p[0]) not in missing]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(model, options, providers=providers)
        self.providers = self.session.get_providers()
        self.version = ort.__version__

    def run(self, scan: BinnedScan, logits: bool = True) -> EngineOutput:
        feeds = onnx_inputs(scan)
        names = ["labels", "confidence"] + (["point_logits"] if logits else [])
        return EngineOutput(*self.session.run(names, feeds))


class OpenVinoBackend:
    name = "openvino"

    def __init__(
        self,
        model: bytes,
        device: str = "cpu",
        num_threads: int | None = None,
        fp16: bool = False,
        max_points: int = 500_000,  # unused: OpenVINO takes any size
    ):
        ov = _import_engine("openvino")
        core = ov.Core()
        target = "CPU" if device == "cpu" else "GPU"
        if target not in core.available_devices:
            raise RuntimeError(f"backend 'openvino' has no {target} device here (devices: {core.available_devices})")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f16" if fp16 else "f32"}
        if num_threads and target == "CPU":
            config["INFERENCE_NUM_THREADS"] = num_threads
        self.compiled = core.compile_model(core.read_model(model), target, config)
        self.request = self.compiled.create_infer_request()
        self.outputs = {name: self.compiled.output(name) for name in ("labels", "confidence", "point_logits")}
        self.version = ov.__version__

    def run(self, scan: BinnedScan, logits: bool = True) -> EngineOutput:
        feeds = onnx_inputs(scan)
        self.request.infer(feeds)
        result = self.request.results
        # Copies: the request's output tensors are reused by the next inference.
        return EngineOutput(
            result[self.outputs["labels"]].copy(),
            result[self.outputs["confidence"]].copy(),
            result[self.outputs["point_logits"]].copy() if logits else None,
        )
