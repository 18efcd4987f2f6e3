"""What the node's optional outputs cost per scan, ROS-free (ScanLabeller on rclpy messages).

    flock /tmp/m2s-bench.lock python -m bench.bench_node_outputs [--points 120000] [--repeats 20]

An HDL-64-sized organised cloud in an Ouster-like layout (x, y, z, t, reflectivity, ring; 48-byte
points, row padding) through the labeller with: the default labelled cloud; keep_input_fields; the
filtered cloud only; both outputs. The model is a small random polar net, so ``inference`` is not
the deployed model's: compare the decode and encode columns, which do not depend on it.
Prints p50 per stage over the repeats, measured in one run.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sensor_msgs.msg import PointCloud2, PointField

from m2s_perception.inference import Segmenter
from m2s_perception.labels import load_label_map
from m2s_perception.models import ModelConfig, build_model
from m2s_perception.pipeline import LabelSettings, ScanLabeller
from m2s_perception.pointcloud2 import FLOAT32, UINT16
from tests.clouds import FieldSpec, ros_cloud

GROUND = ("road", "sidewalk", "parking", "other-ground", "terrain")


def ouster_cloud(num_points: int, rows: int = 64) -> PointCloud2:
    rng = np.random.default_rng(0)
    rho, phi = rng.uniform(3, 50, num_points), rng.uniform(-np.pi, np.pi, num_points)
    specs = [FieldSpec(n, 4 * k, FLOAT32) for k, n in enumerate(("x", "y", "z"))]
    specs += [FieldSpec("t", 16, FLOAT32), FieldSpec("reflectivity", 20, UINT16), FieldSpec("ring", 22, UINT16)]
    values = {
        "x": (rho * np.cos(phi)).astype(np.float32),
        "y": (rho * np.sin(phi)).astype(np.float32),
        "z": rng.uniform(-2.5, 0.5, num_points).astype(np.float32),
        "t": np.zeros(num_points, np.float32),
        "reflectivity": rng.integers(0, 255, num_points).astype(np.uint16),
        "ring": np.repeat(np.arange(rows, dtype=np.uint16), num_points // rows),
    }
    return ros_cloud(PointCloud2, PointField, None, specs, values, point_step=48, height=rows, row_padding=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=120_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = ModelConfig(width=0.25, grid_size=(120, 90, 16), levels=3)
    labeller = ScanLabeller(Segmenter(build_model(config), config, "cpu"), load_label_map(), PointCloud2, PointField)
    msg = ouster_cloud(args.points - args.points % 64)
    msg.header = PointCloud2().header
    cases = {
        "labelled (default)": (LabelSettings(intensity_scale=255.0), True, False),
        "labelled, keep_input_fields": (LabelSettings(intensity_scale=255.0, keep_input_fields=True), True, False),
        "filtered only (ground)": (LabelSettings(intensity_scale=255.0, filtered_classes=GROUND), False, True),
        "labelled + filtered": (LabelSettings(intensity_scale=255.0, filtered_classes=GROUND), True, True),
    }
    print(f"{msg.width * msg.height} points, point_step {msg.point_step}, p50 of {args.repeats} runs (ms)")
    print(f"{'outputs':32s} {'decode':>8s} {'inference':>10s} {'encode':>8s}")
    for name, (settings, labelled, filtered) in cases.items():
        timings = [labeller.label(msg, settings, labelled, filtered).timings_ms for _ in range(args.repeats)]
        p50 = {k: float(np.median([t[k] for t in timings])) for k in ("decode", "inference", "encode")}
        print(f"{name:32s} {p50['decode']:8.1f} {p50['inference']:10.1f} {p50['encode']:8.1f}")


if __name__ == "__main__":
    main()
