"""Run ``m2s-segment`` as a separate process and talk to it over loopback DDS, for tests.

The environment (ROS_AUTOMATIC_DISCOVERY_RANGE, ROS_LOCALHOST_ONLY, ROS_DOMAIN_ID) is inherited
from ``os.environ`` (set by ``tests/conftest.py``). Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

REPO = Path(__file__).resolve().parents[1]


def segment_command() -> list[str]:
    """The installed console script; the module itself when the package is not installed (source tree)."""
    script = shutil.which("m2s-segment", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "m2s_perception.node"]


class SegmentProcess:
    """``m2s-segment --ros-args --params-file <tmp yaml> -r __node:=<name>`` with its log in a file."""

    def __init__(
        self, tmp_dir: Path, name: str, parameters: dict, ros_args: Sequence[str] = (), command: Sequence[str] = ()
    ):
        """``ros_args``: more ``--ros-args`` (``-r a:=b``, ``-p k:=v``); ``command``: instead of m2s-segment."""
        self.name = name
        params_file = tmp_dir / f"{name}.yaml"
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
        self.log_path = tmp_dir / f"{name}.log"
        command = [*(command or segment_command()), "--ros-args", "--params-file", str(params_file)]
        command += ["-r", f"__node:={name}", *ros_args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int | None:
        """Send ``sig`` and wait; kill if it does not exit. Returns the exit code after ``sig`` (None: killed)."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            return None


class CloudClient:
    """Publishes input clouds and collects labelled clouds and diagnostics, in its own rclpy context."""

    def __init__(self, input_topic: str, output_topic: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("m2s_test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.node.create_publisher(PointCloud2, input_topic, reliable)
        self.outputs: dict[tuple[int, int], PointCloud2] = {}
        self.output_order: list[tuple[int, int]] = []
        self.subscription = self.node.create_subscription(PointCloud2, output_topic, self._on_output, reliable)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.levels: dict[str, tuple[int, str]] = {}  # status name -> (level, message) of the latest report
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_output(self, msg: PointCloud2) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.outputs[key] = msg
        self.output_order.append(key)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
            level = status.level  # a byte field: bytes in rclpy
            self.levels[status.name] = (level[0] if isinstance(level, bytes) else int(level), status.message)

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def wait_for_node(self, node: SegmentProcess, timeout: float = 60.0, output: bool = True) -> None:
        """Until both directions are matched: our input writer with the node's reader (the node
        subscribes after loading and warm-up) and, with ``output``, our output reader with the node's
        writer (a labelled cloud sent before that match would be lost, reliable or not)."""

        def matched() -> bool:
            inputs = self.publisher.get_subscription_count() > 0
            return inputs and (not output or self.subscription.get_publisher_count() > 0)

        started = self.wait_until(lambda: matched() or node.process.poll() is not None, timeout)
        if not started or node.process.poll() is not None:
            raise AssertionError(f"m2s-segment did not come up within {timeout} s; log:\n{node.log()}")

    def probe(self, publisher, msg: PointCloud2, timeout: float = 60.0, every: float = 2.0) -> bool:
        """Publish ``msg`` on ``publisher`` every ``every`` s until its labelled cloud comes back.

        Each side matches the other on its own: the node's reader may match a best-effort writer of
        ours a moment after ours has matched it, and a cloud sent in between is dropped, not queued.
        One answered probe shows both directions carry clouds, so what is sent next can be counted."""
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            publisher.publish(msg)
            if self.wait_until(lambda: key in self.outputs, min(every, max(deadline - time.monotonic(), 0.0))):
                return True
        return False

    def request(self, msg: PointCloud2, timeout: float = 20.0, resend_after: float = 5.0) -> PointCloud2:
        """Publish ``msg`` and wait for the labelled cloud with the same stamp.

        Sent once more if unanswered after ``resend_after`` s: once, in a clean-clone ``make test`` on a
        slower 2-core machine, the first scan after ``wait_for_node`` was never answered (reliable QoS on
        both sides), when ``wait_for_node`` still waited for the input direction alone. It waits for both
        now; the resend stays as a guard, since that one failure was not reproduced to confirm the cause.
        No test counts these requests."""
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.publisher.publish(msg)
        if not self.wait_until(lambda: key in self.outputs, min(resend_after, timeout)):
            self.publisher.publish(msg)
            if not self.wait_until(lambda: key in self.outputs, max(timeout - resend_after, 0.0)):
                raise AssertionError(f"no labelled cloud for stamp {key} within {timeout} s (sent twice)")
        return self.outputs[key]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@contextmanager
def serving(workdir: Path, name: str, parameters: dict) -> Iterator[tuple[SegmentProcess, CloudClient]]:
    """A started node named ``name`` and a client on its ``/<name>/points`` → ``/<name>/labelled``; both
    stopped on exit (the node with SIGTERM, as a launch system stops it)."""
    node = SegmentProcess(workdir, name, parameters)
    client = CloudClient(f"/{name}/points", f"/{name}/labelled")
    try:
        client.wait_for_node(node)
        yield node, client
    finally:
        client.close()
        node.stop(signal.SIGTERM)


def refused_start_log(workdir: Path, name: str, parameters: dict, timeout: float = 60.0) -> str:
    """Start a node that must refuse to start: assert it exits with status 1 (no traceback) and return its log."""
    node = SegmentProcess(workdir, name, parameters)
    try:
        code = node.process.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        node.stop(signal.SIGKILL)
    log = node.log()
    assert code == 1, f"exit status {code}; log:\n{log}"
    assert "Traceback" not in log, log
    return log
