"""The real ``m2s-segment`` process and a DDS client for it, shared by ``fuzz_node.py`` and ``soak_node.py``.

The node runs as ``m2s bag evaluate`` runs it (``NodeProcess``: its own process group, killed with
this process), DDS on loopback with the shipped Fast DDS profile. The client publishes RELIABLE
(every message reaches the node: the benches test the node, not the transport), collects the
labelled clouds and the node's ``/diagnostics`` counters, and reads the node's RSS and thread count.
"""

from __future__ import annotations

import array
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from m2s_training.bag import use_loopback_dds

use_loopback_dds()  # before rclpy is imported

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import rclpy  # noqa: E402
import yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from m2s_training.bag.node_process import NodeProcess  # noqa: E402

DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "m2s_perception" / "weights" / "demo_student.pt"
COUNTERS = ("scans_received", "scans_processed", "scans_dropped", "scans_rejected")


def start_node(workdir: Path, name: str, checkpoint: Path, **overrides) -> NodeProcess:
    parameters = {
        "checkpoint": str(checkpoint.resolve()),
        "device": "cpu",
        "input_topic": f"/{name}/points",
        "output_topic": f"/{name}/labelled",
        "input_reliability": "reliable",
        "input_depth": 1,
        "stats_period_s": 0.1,
        **overrides,
    }
    params_file = workdir / f"{name}.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(150, 230)))
    return NodeProcess(params_file, workdir / f"{name}.log")


def valid_cloud(points: int, seed: int, sec: int) -> PointCloud2:
    """x, y, z, intensity float32 on a ring 3..40 m: what a LiDAR driver sends."""
    rng = np.random.default_rng(seed)
    rho, phi = rng.uniform(3, 40, points), rng.uniform(-np.pi, np.pi, points)
    data = np.stack([rho * np.cos(phi), rho * np.sin(phi), rng.uniform(-2, 0.5, points), rng.uniform(0, 1, points)], 1)
    msg = PointCloud2()
    msg.header.frame_id = "lidar"
    msg.header.stamp.sec = sec
    msg.height, msg.width = 1, points
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate(("x", "y", "z", "intensity"))]  # fmt: skip
    msg.point_step, msg.row_step, msg.is_dense = 16, 16 * points, True
    msg.data = array.array("B", data.astype(np.float32).tobytes())
    return msg


class Client:
    def __init__(self, name: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"{name}_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.node.create_publisher(PointCloud2, f"/{name}/points", reliable)
        self.answered: set[int] = set()
        self.node.create_subscription(PointCloud2, f"/{name}/labelled", self._on_output, reliable)
        self.counters: dict[str, int] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._status = ": segmentation"

    def _on_output(self, msg: PointCloud2) -> None:
        self.answered.add(msg.header.stamp.sec)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(self._status):  # "<node name>: segmentation" (one node per domain here)
                self.counters = {kv.key: int(kv.value) for kv in status.values if kv.value.lstrip("-").isdigit()}

    def accounted(self) -> int:
        """Messages the node has finished with: labelled, dropped for a newer one, or rejected."""
        return sum(self.counters.get(k, 0) for k in ("scans_processed", "scans_dropped", "scans_rejected"))

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return condition()

    def wait_for_node(self, node: NodeProcess, timeout: float = 120.0) -> None:
        up = self.wait_until(lambda: self.publisher.get_subscription_count() > 0 or not node.alive(), timeout)
        if not up or not node.alive():
            raise SystemExit(f"m2s-segment did not come up:\n{node.log_tail()}")
        self.wait_until(lambda: bool(self.counters), 10.0)

    def request(self, msg: PointCloud2, timeout: float = 30.0) -> bool:
        sec = msg.header.stamp.sec
        self.publisher.publish(msg)
        return self.wait_until(lambda: sec in self.answered, timeout)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def usage(node: NodeProcess) -> tuple[float, int]:
    """(RSS in MB, threads) of the node process."""
    process = psutil.Process(node.process.pid)
    return process.memory_info().rss / 1e6, process.num_threads()


def verdict(checks: dict[str, bool], summary: dict, json_path: Path | None) -> int:
    """Print each check as PASS/FAIL, write the summary as JSON if asked; the exit code (0: all pass)."""
    for name, ok in checks.items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")
    if json_path:
        json_path.write_text(json.dumps({**summary, "checks": checks}, indent=1) + "\n")
    return 0 if all(checks.values()) else 1


@contextmanager
def serving(workdir: Path, name: str, checkpoint: Path) -> Iterator[tuple[NodeProcess, Client, dict]]:
    """A started node and its client; on exit both stop, and the dict says whether the node was
    still alive at the end (``{"alive": bool}``)."""
    node = start_node(workdir, name, checkpoint)
    client = Client(name)
    end: dict = {}
    try:
        client.wait_for_node(node)
        yield node, client, end
    finally:
        client.close()
        end["alive"] = node.alive()
        node.stop()
