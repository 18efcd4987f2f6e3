"""``m2s-export``: a polar checkpoint as one ONNX file that ONNX Runtime, OpenVINO and TensorRT run.

    m2s-export --checkpoint runs/student/best.pt --out runs/student/onnx [--points 120000] [--scan KITTI.bin …]

The file holds ``FusedPolarNet`` (BatchNorm folded, m2s_perception/models/polar_fused.py; an ensemble
checkpoint: ``FusedPolarEnsemble``, every network and the averaging in the one graph), opset 18:
inputs ``features`` (9, N; 10 with the surface texture) float32, ``point_cell`` (N,), ``point_voxel``
(N,) and ``cells`` (U,) int64, all with dynamic sizes, as ``m2s_perception.binning.PolarBinning`` makes them; outputs
``labels`` (N,) int64 training ids, ``confidence`` (N,) float32 and ``point_logits`` (N, classes).
The cell max pooling is one ScatterElements node with reduction "max" (ScatterND, faster, races in
ONNX Runtime: see ``export_onnx``). The model config and class
names ride along as metadata, so ``Segmenter.from_checkpoint("model.onnx", backend=...)`` needs
nothing else. After writing, the command runs the file in ONNX Runtime on real-sized scans and
prints how far it is from the torch network (the training ``PolarNet``) it came from, on rings of
points spread over the grid (``--points``) and on any SemanticKITTI ``.bin`` scans given (``--scan``).

The Cylinder3D backbone is not exportable: its sparse convolutions (spconv) have no ONNX form; nor,
yet, is the range-view backbone (no fused network or binning outside the graph has been written for it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from m2s_perception.backends import _import_engine
from m2s_perception.binning import PolarBinning
from m2s_perception.checkpoint import load_model
from m2s_perception.models import ModelConfig
from m2s_perception.models.polar_fused import FusedPolarEnsemble, FusedPolarNet, fuse_polar

OPSET = 18  # ScatterElements / ScatterND reduction="max" need 18
INPUTS = ("features", "point_cell", "point_voxel", "cells")
OUTPUTS = ("labels", "confidence", "point_logits")
META_CONFIG, META_CLASSES, META_POOLING = "m2s_model_config", "m2s_class_names", "m2s_pooling"


class ExportError(ValueError):
    """A model that cannot become an ONNX file; the message says why."""


NOT_EXPORTABLE = {
    "cylinder": "its sparse 3D convolutions (spconv) have no ONNX form. Only polar checkpoints export; "
    "run this one with backend 'torch'.",
    "range": "no ONNX form has been written for the range view yet. Only polar checkpoints export; "
    "run this one with backend 'torch'.",
}


def fused_network(
    model: torch.nn.Module, config: ModelConfig, pooling: str = "elements"
) -> FusedPolarNet | FusedPolarEnsemble:
    if config.backbone != "polar":
        raise ExportError(f"the {config.backbone!r} backbone cannot be exported: {NOT_EXPORTABLE[config.backbone]}")
    return fuse_polar(model.eval(), pooling).cpu().eval()


def export_onnx(
    model: torch.nn.Module, config: ModelConfig, class_names: list[str] | None = None, pooling: str = "elements"
) -> bytes:
    """The ONNX model (bytes) of a polar network, with its config and class names as metadata.

    ``pooling="elements"`` (ScatterElements) runs correctly everywhere; "rows" (ScatterND, no
    (N, C) index) is faster but ONNX Runtime's CPU kernel races on it: OpenVINO only.
    """
    onnx = _import_engine("onnx")

    network = fused_network(model, config, pooling)
    example = PolarBinning(config)(ring_scan(config, 2000, seed=0))
    args = tuple(
        torch.from_numpy(a.copy()) for a in (example.features, example.point_cell, example.point_voxel, example.cells)
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            network,
            args,
            buffer,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            opset_version=OPSET,
            dynamic_axes={
                "features": {1: "points"},
                "point_cell": {0: "points"},
                "point_voxel": {0: "points"},
                "cells": {0: "cells"},
                "labels": {0: "points"},
                "confidence": {0: "points"},
                "point_logits": {0: "points"},
            },
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, and it handles scatter_reduce
        )
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {
        META_CONFIG: json.dumps(config.to_dict()),
        META_CLASSES: json.dumps(list(class_names or [])),
        META_POOLING: pooling,
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def read_metadata(model_bytes_or_path: bytes | str | Path) -> tuple[ModelConfig, list[str], str]:
    """The model config, class names and pooling form an exported file carries."""
    onnx = _import_engine("onnx")

    if isinstance(model_bytes_or_path, bytes):
        proto = onnx.load_from_string(model_bytes_or_path)
    else:
        proto = onnx.load(str(model_bytes_or_path), load_external_data=False)
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    if META_CONFIG not in meta:
        raise ExportError(f"{model_bytes_or_path}: not an m2s export (no {META_CONFIG} metadata); use m2s-export")
    config = ModelConfig.from_dict(json.loads(meta[META_CONFIG]))
    return config, json.loads(meta.get(META_CLASSES, "[]")), meta.get(META_POOLING, "elements")


def ring_scan(config: ModelConfig, num_points: int, seed: int) -> np.ndarray:
    """(num_points, 4) float32 spread over the model's grid (some points beyond it, to exercise clamping);
    (num_points, 5) with a random surface texture in [0, 1] for a model that has one."""
    rng = np.random.default_rng(seed)
    low, high = config.rho_range
    rho = rng.uniform(max(0.0, low - 1.0), high + 5.0, num_points)
    phi = rng.uniform(-np.pi, np.pi, num_points)
    z = rng.uniform(config.z_range[0] - 0.5, config.z_range[1] + 0.5, num_points)
    columns = [rho * np.cos(phi), rho * np.sin(phi), z, rng.uniform(0, 1, num_points)]
    if config.uses_texture:
        columns.append(rng.uniform(0, 1, num_points))
    return np.stack(columns, axis=1).astype(np.float32)


@dataclass
class Parity:
    points: int
    max_abs_logit_diff: float
    logit_scale: float
    label_agreement: float

    def __str__(self) -> str:
        return (
            f"{self.points:7d} points: max |logit diff| {self.max_abs_logit_diff:.2e} (logits up to "
            f"{self.logit_scale:.2f}), labels agree on {100 * self.label_agreement:.3f} % of points"
        )


def parity(reference: torch.nn.Module, backend, config: ModelConfig, scan: np.ndarray) -> Parity:
    """Compare a backend (``m2s_perception.backends``) with the training network on one scan."""
    from m2s_perception.inference import labels_from_logits

    with torch.inference_mode():
        points = torch.from_numpy(scan)
        logits = reference(points, torch.zeros(len(points), dtype=torch.long), 1).point_logits
        labels, _ = labels_from_logits(logits)
    result = backend.run(PolarBinning(config)(scan))
    diff = np.abs(result.point_logits - logits.numpy()).max()
    agreement = float((result.labels == labels.numpy()).mean())
    return Parity(len(scan), float(diff), float(logits.abs().max()), agreement)


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: a reader never sees half a model."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model file is as readable as any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="an m2s checkpoint (.pt) of a polar model")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.onnx (created)")
    parser.add_argument("--points", type=int, nargs="+", default=[120_000, 30_000], help="parity scan sizes")
    parser.add_argument("--scan", type=Path, nargs="*", default=[], help="also check these KITTI .bin scans")
    parser.add_argument(
        "--pooling",
        choices=("elements", "rows"),
        default="elements",
        help="max-pooling form: elements (ScatterElements, every engine) or rows (ScatterND: faster, "
        "OpenVINO only; ONNX Runtime's ScatterND max races between threads)",
    )
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max |logit diff| the parity check accepts")
    args = parser.parse_args(argv)

    from m2s_perception.backends import OnnxRuntimeBackend
    from m2s_perception.checkpoint import read_checkpoint

    try:
        model, config, _meta = load_model(args.checkpoint, "cpu")
        class_names = read_checkpoint(args.checkpoint).get("class_names")
        model_bytes = export_onnx(model, config, class_names, args.pooling)
    except (ExportError, ValueError, FileNotFoundError) as err:
        print(f"m2s-export: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "model.onnx"
    write_atomic(path, model_bytes)
    described = f"{config.backbone} width {config.width:g}"
    described += f", {config.members} networks averaged" if config.members > 1 else ""
    print(f"wrote {path} ({len(model_bytes) / 1e6:.1f} MB, opset {OPSET}, {described})")

    if args.pooling == "rows":
        from m2s_perception.backends import OpenVinoBackend

        backend, engine = OpenVinoBackend(path.read_bytes(), device="cpu"), "OpenVINO"
    else:
        backend, engine = OnnxRuntimeBackend(path.read_bytes(), device="cpu"), "ONNX Runtime"
    print(f"parity with torch ({engine} {backend.version}, CPU, fp32):")
    worst = 0.0
    scans = [(f"ring {n}", ring_scan(config, n, seed=i + 1)) for i, n in enumerate(args.points)]
    try:
        scans += [(path.name, np.fromfile(path, np.float32).reshape(-1, 4)) for path in args.scan]
    except (OSError, ValueError) as err:
        print(f"m2s-export: --scan: {err}", file=sys.stderr)
        return 2
    for name, scan in scans:
        result = parity(model, backend, config, scan)
        worst = max(worst, result.max_abs_logit_diff)
        print(f"  {name}: {result}")
    if worst > args.tolerance:
        print(f"m2s-export: parity FAILED: logits differ by {worst:.2e} > {args.tolerance:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
