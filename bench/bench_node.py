"""End-to-end latency of ``m2s-segment`` for a 120k-point scan: publisher → node → subscriber over loopback DDS.

    nice -n 10 .venv/bin/python bench/bench_node.py [--device cpu|cuda|auto] [--scans 20] [--checkpoint PATH]

Starts the node as its own process with config/segment.yaml (input QoS: --input-reliability), sends
one HDL-64-like scan at a time (64 beams × 1875 columns, ground plane plus walls), waits for its
labelled cloud and reports the round trip p50/p95 together with the node's own per-stage figures
from /diagnostics. Without ``--checkpoint`` it times a randomly initialised polar student
(``config/model_polar.yaml`` at width 0.5): latency does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from m2s_perception.pointcloud2 import make_cloud

REPO = Path(__file__).resolve().parents[1]
INPUT, OUTPUT = "/velodyne_points", "/m2s/labelled_points"


def keep_dds_on_loopback() -> None:
    """Before rclpy.init and before starting the node (which inherits os.environ)."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(201, 232)))


def hdl64_like_scan(beams: int = 64, columns: int = 1875, seed: int = 0) -> np.ndarray:
    """(beams * columns, 4) float32: rays hit the ground 1.73 m below or a wall 5..60 m away."""
    rng = np.random.default_rng(seed)
    elevation = np.deg2rad(np.linspace(-24.8, 2.0, beams))[:, None]
    azimuth = np.linspace(-np.pi, np.pi, columns, endpoint=False)[None, :]
    wall = rng.uniform(5, 60, (1, columns)).repeat(beams, 0)
    ground = np.where(elevation < 0, 1.73 / np.tan(-np.minimum(elevation, -1e-3)), np.inf)
    distance = np.minimum(wall / np.cos(elevation), ground / np.cos(elevation)) + rng.normal(0, 0.02, (beams, columns))
    horizontal = distance * np.cos(elevation)
    points = np.stack(
        [
            horizontal * np.cos(azimuth),
            horizontal * np.sin(azimuth),
            distance * np.sin(elevation),
            rng.uniform(0, 1, (beams, columns)),
        ],
        axis=-1,
    )
    return points.reshape(-1, 4).astype(np.float32)


def default_checkpoint(directory: Path) -> Path:
    import torch

    from m2s_perception.models import ModelConfig, build_model
    from m2s_training.checkpoint import save_checkpoint

    config = ModelConfig.from_yaml(REPO / "config/model_polar.yaml")
    config.width = 0.5
    torch.manual_seed(0)
    path = directory / "random_polar_student.pt"
    save_checkpoint(path, build_model(config), config)
    return path


def start_node(checkpoint: Path, device: str, reliability: str, log_path: Path) -> subprocess.Popen:
    script = shutil.which("m2s-segment", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "m2s_perception.node"]
    command += ["--ros-args", "--params-file", str(REPO / "config/segment.yaml")]
    command += ["-p", f"checkpoint:={checkpoint}", "-p", f"device:={device}", "-p", "stats_period_s:=1.0"]
    command += ["-p", f"input_reliability:={reliability}"]
    command += ["-r", "__ns:=/m2s", "-r", f"points:={INPUT}"]  # the node's topics are relative: m2s/labelled_points
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)


def percentile_line(name: str, values: list[float]) -> str:
    p50, p95 = np.percentile(values, [50, 95])
    return f"{name:28s} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="node device: cpu, cuda or auto")
    parser.add_argument("--scans", type=int, default=20, help="timed scans (after 3 warm-up scans)")
    parser.add_argument("--checkpoint", type=Path, help="default: a randomly initialised polar student")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one labelled scan")
    parser.add_argument(
        "--input-reliability",
        choices=("reliable", "best_effort"),
        default="reliable",
        help="QoS of the scan publisher and the node's input (config default: best_effort)",
    )
    args = parser.parse_args()
    keep_dds_on_loopback()

    work = Path(tempfile.mkdtemp(prefix="m2s_bench_node_"))
    checkpoint = args.checkpoint or default_checkpoint(work)
    points = hdl64_like_scan()
    columns = {name: points[:, k].copy() for k, name in enumerate(("x", "y", "z", "intensity"))}
    scan = make_cloud(PointCloud2, PointField, Header(frame_id="velodyne"), columns)

    log_path = work / "node.log"
    node_process = start_node(checkpoint, args.device, args.input_reliability, log_path)
    rclpy.init()
    client = rclpy.create_node("m2s_bench_client")
    received: dict[int, float] = {}
    diagnostics: dict[str, str] = {}
    client.create_subscription(
        PointCloud2,
        OUTPUT,
        lambda msg: received.setdefault(msg.header.stamp.sec, time.perf_counter()),
        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
    )
    client.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda msg: diagnostics.update({kv.key: kv.value for s in msg.status for kv in s.values}),
        10,
    )
    reliability = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
    publisher_qos = QoSProfile(depth=1, reliability=reliability[args.input_reliability])
    publisher = client.create_publisher(PointCloud2, INPUT, publisher_qos)

    def spin_until(condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition():
            rclpy.spin_once(client, timeout_sec=0.01)
        return condition()

    try:
        if not spin_until(lambda: publisher.get_subscription_count() > 0 or node_process.poll() is not None, 180):
            raise SystemExit(f"the node did not subscribe within 180 s; log: {log_path}")
        if node_process.poll() is not None:
            raise SystemExit(f"the node exited:\n{log_path.read_text()}")
        latencies, lost = [], 0
        for index in range(3 + args.scans):
            scan.header.stamp.sec = index + 1
            sent = time.perf_counter()
            publisher.publish(scan)
            if not spin_until(lambda i=index: i + 1 in received, args.timeout):
                lost += 1
                continue
            if index >= 3:
                latencies.append(1e3 * (received[index + 1] - sent))
            spin_until(lambda: False, 0.05)  # let the node go idle between scans
        spin_until(lambda: diagnostics.get("scans_processed") == str(3 + args.scans - lost), 5)
    finally:
        client.destroy_node()
        rclpy.try_shutdown()
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(15)
        except subprocess.TimeoutExpired:
            node_process.kill()

    print(
        f"m2s-segment end-to-end, {len(points)} points/scan, device {args.device}, "
        f"input QoS {args.input_reliability}, checkpoint {checkpoint.name}"
    )
    print(f"{lost} of {3 + args.scans} scans got no answer within {args.timeout} s")
    if latencies:
        print(percentile_line("publish → labelled cloud", latencies))
    for stage in ("decode", "inference", "encode", "publish", "total"):
        if f"{stage}_ms_p50" in diagnostics:
            p50, p95 = float(diagnostics[f"{stage}_ms_p50"]), float(diagnostics[f"{stage}_ms_p95"])
            print(f"{'node ' + stage:28s} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   (node's window, incl. warm-up)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
