"""End-to-end latency of ``m2s-segment`` for a 120k-point scan: publisher → node → subscriber over loopback DDS.

    nice -n 10 .venv/bin/python bench/bench_node.py [--device cpu|cuda|auto] [--scans 20] [--checkpoint PATH]
    .venv/bin/python bench/bench_node.py --backend torch openvino --num-threads 2 --rounds 2 [--real ../shared/real]

Starts the node as its own process with config/segment.yaml (input QoS: --input-reliability), sends
one HDL-64-like scan at a time (64 beams × 1875 columns, ground plane plus walls), waits for its
labelled cloud and reports the round trip p50/p95 together with the node's own per-stage figures
from /diagnostics. Without ``--checkpoint`` it times a randomly initialised polar student
(``config/model_polar.yaml`` at width 0.5): latency does not depend on the weights.

``--backend A B …`` starts one node per backend (``-p backend:=…``), one after the other, ``--rounds``
times in alternation, and prints each one's figures and its speed-up over the first, all measured
in this one run; ``--ensemble-members 0 1 …`` does the same per ``ensemble_members`` value (an
ensemble checkpoint, e.g. the demo weights: all networks against the first one). ``--real DIR``
sends the SemanticKITTI scans under DIR in turn (evaluation only).
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
from dataclasses import dataclass, field
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


def start_node(checkpoint: Path, device: str, reliability: str, log_path: Path, engine: Engine) -> subprocess.Popen:
    script = shutil.which("m2s-segment", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "m2s_perception.node"]
    command += ["--ros-args", "--params-file", str(REPO / "config/segment.yaml")]
    command += ["-p", f"checkpoint:={checkpoint}", "-p", f"device:={device}", "-p", "stats_period_s:=1.0"]
    command += ["-p", f"input_reliability:={reliability}"]
    command += ["-r", "__ns:=/m2s", "-r", f"points:={INPUT}"]  # the node's topics are relative: m2s/labelled_points
    if engine.backend != "torch":
        command += ["-p", f"backend:={engine.backend}"]
    if engine.threads:
        command += ["-p", f"num_threads:={engine.threads}"]
    if engine.members:
        command += ["-p", f"ensemble_members:={engine.members}"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)


def percentile_line(name: str, values: list[float]) -> str:
    p50, p95 = np.percentile(values, [50, 95])
    return f"{name:28s} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   (n={len(values)})"


@dataclass(frozen=True)
class Engine:
    backend: str
    threads: int
    members: int = 0  # the node's ensemble_members (0: all networks of the checkpoint)

    @property
    def name(self) -> str:
        return self.backend + (f", ensemble_members {self.members}" if self.members else "")


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    sent: int = 0
    stages: dict[str, list[float]] = field(default_factory=dict)  # stage → [p50, p95] of the last run


def read_scans(folder: Path) -> list[np.ndarray]:
    """SemanticKITTI ``*.bin`` scans (x y z remission) under ``folder``, for evaluation only."""
    paths = sorted(p for p in folder.rglob("*.bin") if not p.name.endswith(".pcd.bin"))
    if not paths:
        raise SystemExit(f"no SemanticKITTI *.bin scans under {folder}")
    return [np.fromfile(p, np.float32).reshape(-1, 4) for p in paths]


def bench_node(engine: Engine, args: argparse.Namespace, checkpoint: Path, scans: list, work: Path, run: Run) -> None:
    """Start a node with ``engine``, send it 3 warm-up + ``args.scans`` scans one at a time, add to ``run``."""
    log_path = work / f"node_{engine.backend}_{engine.members}.log"
    node_process = start_node(checkpoint, args.device, args.input_reliability, log_path, engine)
    client = rclpy.create_node(f"m2s_bench_client_{engine.backend}_{engine.members}")
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
        lost = 0
        for index in range(3 + args.scans):
            scan = scans[index % len(scans)]
            scan.header.stamp.sec = index + 1
            sent = time.perf_counter()
            publisher.publish(scan)
            if not spin_until(lambda i=index: i + 1 in received, args.timeout):
                lost += 1
                continue
            if index >= 3:
                run.latencies.append(1e3 * (received[index + 1] - sent))
            spin_until(lambda: False, 0.05)  # let the node go idle between scans
        run.lost += lost
        run.sent += 3 + args.scans
        spin_until(lambda: diagnostics.get("scans_processed") == str(3 + args.scans - lost), 5)
        for stage in ("decode", "inference", "encode", "publish", "total"):
            if f"{stage}_ms_p50" in diagnostics:
                run.stages[stage] = [float(diagnostics[f"{stage}_ms_p50"]), float(diagnostics[f"{stage}_ms_p95"])]
    finally:
        client.destroy_node()
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(15)
        except subprocess.TimeoutExpired:
            node_process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="node device: cpu, cuda or auto")
    parser.add_argument("--scans", type=int, default=20, help="timed scans per node run (after 3 warm-up scans)")
    parser.add_argument("--checkpoint", type=Path, help="default: a randomly initialised polar student")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one labelled scan")
    parser.add_argument(
        "--input-reliability",
        choices=("reliable", "best_effort"),
        default="reliable",
        help="QoS of the scan publisher and the node's input (config default: best_effort)",
    )
    parser.add_argument("--backend", nargs="+", default=["torch"], help="node backends to compare (first = baseline)")
    parser.add_argument("--num-threads", type=int, default=0, help="the node's num_threads (0: library default)")
    parser.add_argument(
        "--ensemble-members", type=int, nargs="+", default=[0], help="the node's ensemble_members values to compare"
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternate the backends this many times")
    parser.add_argument("--real", type=Path, help="send the SemanticKITTI *.bin scans under this folder instead")
    args = parser.parse_args()
    keep_dds_on_loopback()

    work = Path(tempfile.mkdtemp(prefix="m2s_bench_node_"))
    checkpoint = args.checkpoint or default_checkpoint(work)
    clouds = read_scans(args.real) if args.real else [hdl64_like_scan()]
    scans = []
    for points in clouds:
        columns = {name: points[:, k].copy() for k, name in enumerate(("x", "y", "z", "intensity"))}
        scans.append(make_cloud(PointCloud2, PointField, Header(frame_id="velodyne"), columns))

    engines = [Engine(b, args.num_threads, m) for b in args.backend for m in args.ensemble_members]
    runs = {engine: Run() for engine in engines}
    rclpy.init()
    try:
        for _ in range(args.rounds):
            for engine in engines:
                bench_node(engine, args, checkpoint, scans, work, runs[engine])
    finally:
        rclpy.try_shutdown()

    source = f"{len(clouds)} real scans from {args.real}" if args.real else "a synthetic HDL-64-like scan"
    points = "/".join(str(len(c)) for c in clouds)
    print(
        f"m2s-segment end-to-end, {source} ({points} points), device {args.device}, "
        f"input QoS {args.input_reliability}, checkpoint {checkpoint.name}, num_threads {args.num_threads or 'default'}"
    )
    baseline = runs[engines[0]]
    for engine, run in runs.items():
        print(f"\n== backend {engine.name}: {run.lost} of {run.sent} scans got no answer within {args.timeout} s")
        if run.latencies:
            print(percentile_line("publish → labelled cloud", run.latencies))
        for stage, (p50, p95) in run.stages.items():
            print(f"{'node ' + stage:28s} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   (node's window, last round)")
        if engine != engines[0] and run.latencies and baseline.latencies:
            base50, base95 = np.percentile(baseline.latencies, [50, 95])
            p50, p95 = np.percentile(run.latencies, [50, 95])
            print(f"speed-up vs {engines[0].name}: p50 {base50 / p50:.2f}x   p95 {base95 / p95:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
