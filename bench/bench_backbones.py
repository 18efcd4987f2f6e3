"""Forward latency per scan of each backbone (teacher vs student), then of the inference engines.

    .venv/bin/python bench/bench_backbones.py [--points 120000] [--repeats 5] [--device cpu cuda] \
        [--backbones polar cylinder range]
    .venv/bin/python bench/bench_backbones.py --backbones --backends torch onnxruntime openvino \
        [--threads 2] [--checkpoint m2s_perception/weights/demo_student.pt [OTHER.pt ...]] [--real ../shared/real]

The scan is a synthetic 64-beam spinning LiDAR (HDL-64-like elevations) looking at a ground plane
and a ring of walls, so its density falls with range like a real scan. Timing covers the whole
model call (grid assignment, point MLP, pooling, network, gathering), as ``Segmenter.predict``
runs it: inference mode, fp16 autocast on CUDA. Prints a Markdown table.

``--backends`` times ``Segmenter.predict`` (numpy in, labels out) per engine on the same scans in
one run, round-robin so that load from other processes hits all alike, against the path every
Segmenter took before the engines: the training ``PolarNet.forward`` + argmax ("torch-train").
It prints the ratio and the share of points whose label equals that path's (float32 CPU). The
model is ``--checkpoint`` (several: one table each, in turn, in the same run) or a randomly
initialised polar student (config/model_polar.yaml, width 0.5); ``--real DIR`` adds every
``*.bin`` scan under DIR (SemanticKITTI x y z remission; nuScenes ``*.pcd.bin`` x y z intensity
ring, intensity / 255), for evaluation only.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from m2s_perception.inference import Segmenter, labels_from_logits
from m2s_perception.models import ModelConfig, build_model

REPO = Path(__file__).resolve().parents[1]

SENSOR_HEIGHT = 1.73  # metres above the ground, as on the KITTI car


def synthetic_scan(num_points: int, seed: int = 0) -> np.ndarray:
    """(num_points, 4) float32: 64 beams from +2° to -24.8°, ground below, walls at 8–70 m around."""
    rng = np.random.default_rng(seed)
    beams = 64
    columns = int(np.ceil(num_points / beams))
    elevation = np.deg2rad(np.linspace(2.0, -24.8, beams))[:, None]
    azimuth = np.linspace(-np.pi, np.pi, columns, endpoint=False)[None, :] + rng.normal(0, 1e-3, (beams, columns))
    wall_distance = np.interp(azimuth, np.linspace(-np.pi, np.pi, 37), rng.uniform(8, 70, 37))
    ground_distance = np.where(elevation < 0, SENSOR_HEIGHT / np.tan(-np.minimum(elevation, -1e-6)), np.inf)
    horizontal = np.minimum(wall_distance, ground_distance) + rng.normal(0, 0.02, (beams, columns))
    x, y = horizontal * np.cos(azimuth), horizontal * np.sin(azimuth)
    z = np.broadcast_to(horizontal * np.tan(elevation), x.shape)
    remission = rng.uniform(0, 1, x.shape)
    cloud = np.stack([x, y, z, remission], axis=-1).reshape(-1, 4)[:num_points]
    return cloud.astype(np.float32)


@dataclass
class Measurement:
    backbone: str
    width: float
    device: str
    params: int
    median_ms: float


def measure(backbone: str, width: float, device: torch.device, cloud: torch.Tensor, repeats: int) -> Measurement:
    torch.manual_seed(0)
    # the backbone's config file (config/model_<backbone>.yaml) at this width
    config = dataclasses.replace(ModelConfig.from_yaml(REPO / f"config/model_{backbone}.yaml"), width=width)
    model = build_model(config).to(device).eval()
    batch_index = torch.zeros(len(cloud), dtype=torch.long, device=device)
    fp16 = device.type == "cuda"
    times = []
    for attempt in range(repeats + 1):  # the first run pays allocation and kernel selection
        if fp16:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=fp16):
            model(cloud, batch_index, 1)
        if fp16:
            torch.cuda.synchronize(device)
        if attempt:
            times.append((time.perf_counter() - start) * 1e3)
    params = sum(p.numel() for p in model.parameters())
    return Measurement(backbone, width, device.type, params, statistics.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=120_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"], help="devices to try (cuda skipped if absent)")
    parser.add_argument("--backbones", nargs="*", default=["polar", "cylinder"])
    parser.add_argument("--widths", nargs=2, type=float, default=[1.0, 0.5], metavar=("TEACHER", "STUDENT"))
    parser.add_argument("--backends", nargs="*", default=[], help="engines to time (torch onnxruntime openvino)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for every engine (0: library default)")
    parser.add_argument(
        "--checkpoint", type=Path, nargs="*", default=[None], help="engine section: polar checkpoints (default: random)"
    )
    parser.add_argument("--real", type=Path, help="engine section: also every *.bin scan under this folder")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [torch.device(d) for d in args.device if d != "cuda" or torch.cuda.is_available()]
    scan = synthetic_scan(args.points)
    print(f"scan: {len(scan)} points, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name()}")
    if args.backbones:
        print("| backbone | device | width | params | ms / scan | teacher / student |")
        print("|---|---|---|---|---|---|")
    for device in devices:
        cloud = torch.from_numpy(scan).to(device)
        for backbone in args.backbones:
            teacher, student = (measure(backbone, width, device, cloud, args.repeats) for width in args.widths)
            print(table_row(teacher, ""), flush=True)
            ratio = f"{teacher.median_ms / student.median_ms:.2f}x time, {teacher.params / student.params:.2f}x params"
            print(table_row(student, ratio), flush=True)

    if args.backends:
        scans = {f"synthetic {len(scan)}": scan}
        for path in sorted(args.real.rglob("*.bin")) if args.real else []:
            scans[path.name] = read_scan(path)
        for device in devices:
            for checkpoint in args.checkpoint or [None]:
                compare_backends(args.backends, checkpoint, device, scans, args.repeats, args.threads)


def read_scan(path: Path) -> np.ndarray:
    """A SemanticKITTI .bin (x y z remission) or a nuScenes .pcd.bin (x y z intensity 0..255 ring)."""
    if path.name.endswith(".pcd.bin"):
        cloud = np.fromfile(path, np.float32).reshape(-1, 5)[:, :4].copy()
        cloud[:, 3] /= 255.0
        return cloud
    return np.fromfile(path, np.float32).reshape(-1, 4)


def compare_backends(
    backends: list[str], checkpoint: Path | None, device: torch.device, scans: dict, repeats: int, threads: int
) -> None:
    if checkpoint is None:
        config = ModelConfig.from_yaml(REPO / "config/model_polar.yaml")
        config.width = 0.5
        torch.manual_seed(0)
        model, name = build_model(config).eval(), "random polar student (model_polar.yaml, width 0.5)"
    else:
        segmenter = Segmenter.from_checkpoint(checkpoint, "cpu")
        model, config, name = segmenter.model, segmenter.config, checkpoint.name
    model = model.to(device)
    fp16 = device.type == "cuda"

    def train_path(cloud: np.ndarray) -> np.ndarray:  # what Segmenter.predict ran before the engines
        points = torch.from_numpy(cloud).to(device)
        with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=fp16):
            logits = model(points, torch.zeros(len(points), dtype=torch.long, device=device), 1).point_logits
            return labels_from_logits(logits)[0].to(torch.uint8).cpu().numpy()

    runners = {"torch-train": train_path}
    for backend in backends:
        engine = Segmenter(copy.deepcopy(model), config, device, backend=backend, num_threads=threads or None)
        runners[backend] = lambda cloud, e=engine: e.predict(cloud).labels
    print(f"\nengines, {name}, device {device.type}, threads {threads or 'default'}, median of {repeats}")
    print("| scan | points | engine | ms / scan | speed-up vs torch-train | labels = torch-train |")
    print("|---|---|---|---|---|---|")
    for scan_name, cloud in scans.items():
        reference = runners["torch-train"](cloud)
        times = {engine: [] for engine in runners}
        labels = {engine: runners[engine](cloud) for engine in runners}  # warm-up, and the labels
        for _ in range(repeats):
            for engine, run in runners.items():
                if fp16:
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                run(cloud)
                if fp16:
                    torch.cuda.synchronize(device)
                times[engine].append(1e3 * (time.perf_counter() - start))
        base = statistics.median(times["torch-train"])
        for engine, values in times.items():
            ms = statistics.median(values)
            agree = 100 * float(np.mean(labels[engine] == reference))
            row = f"| {scan_name} | {len(cloud)} | {engine} | {ms:.0f} | {base / ms:.2f}x | {agree:.3f} % |"
            print(row, flush=True)


def table_row(m: Measurement, ratio: str) -> str:
    return f"| {m.backbone} | {m.device} | {m.width:g} | {m.params / 1e6:.2f} M | {m.median_ms:.0f} | {ratio} |"


if __name__ == "__main__":
    main()
