"""Forward latency per scan of the teacher (width 1.0) and student (width 0.5) of each backbone.

    .venv/bin/python bench/bench_backbones.py [--points 120000] [--repeats 5] [--device cpu cuda]

The scan is a synthetic 64-beam spinning LiDAR (HDL-64-like elevations) looking at a ground plane
and a ring of walls, so its density falls with range like a real scan. Timing covers the whole
model call (grid assignment, point MLP, pooling, network, gathering), as ``Segmenter.predict``
runs it: inference mode, fp16 autocast on CUDA. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from m2s_perception.models import ModelConfig, build_model

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
    model = build_model(ModelConfig(backbone=backbone, width=width)).to(device).eval()
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
    parser.add_argument("--backbones", nargs="+", default=["polar", "cylinder"])
    parser.add_argument("--widths", nargs=2, type=float, default=[1.0, 0.5], metavar=("TEACHER", "STUDENT"))
    args = parser.parse_args()

    devices = [torch.device(d) for d in args.device if d != "cuda" or torch.cuda.is_available()]
    scan = synthetic_scan(args.points)
    print(f"scan: {len(scan)} points, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name()}")
    print("| backbone | device | width | params | ms / scan | teacher / student |")
    print("|---|---|---|---|---|---|")
    for device in devices:
        cloud = torch.from_numpy(scan).to(device)
        for backbone in args.backbones:
            teacher, student = (measure(backbone, width, device, cloud, args.repeats) for width in args.widths)
            print(table_row(teacher, ""), flush=True)
            ratio = f"{teacher.median_ms / student.median_ms:.2f}x time, {teacher.params / student.params:.2f}x params"
            print(table_row(student, ratio), flush=True)


def table_row(m: Measurement, ratio: str) -> str:
    return f"| {m.backbone} | {m.device} | {m.width:g} | {m.params / 1e6:.2f} M | {m.median_ms:.0f} | {ratio} |"


if __name__ == "__main__":
    main()
