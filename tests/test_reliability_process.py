"""No orphans: a killed ``m2s-bag evaluate`` takes its ``m2s-segment`` node with it (issue 12 item 2).

Before the fix the node was a plain child: after ``kill -9`` of the evaluator it kept running,
holding the DDS domain (and a GPU where there is one).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from m2s_training.bag.kitti2bag import convert_sequence
from tests.test_bag import _tiny_checkpoint, write_tiny_sequence


def _node_processes(parent: psutil.Process) -> list[psutil.Process]:
    return [p for p in parent.children(recursive=True) if "m2s_perception.node" in " ".join(p.cmdline()) or
            "m2s-segment" in " ".join(p.cmdline())]  # fmt: skip


def _start_evaluation(tmp_path: Path) -> tuple[subprocess.Popen, psutil.Process]:
    """A slow evaluation (5 scans stretched over ~20 s) and its node, once the node runs."""
    root = write_tiny_sequence(tmp_path / "kitti")
    bag = convert_sequence(root, "08", tmp_path / "bag", progress=False)
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")
    command = [sys.executable, "-m", "m2s_training.bag.cli", "evaluate", str(bag), "--checkpoint", str(checkpoint),
               "--out", str(tmp_path / "out"), "--rate", "0.02", "--device", "cpu"]  # fmt: skip
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text('{"miou": 0.99}')  # an earlier, finished run
    evaluation = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(evaluation.pid)
    deadline = time.monotonic() + 60
    while not _node_processes(parent) and time.monotonic() < deadline and evaluation.poll() is None:
        time.sleep(0.1)
    nodes = _node_processes(parent)
    assert nodes, "the evaluation did not start its node"
    time.sleep(3.0)  # kill it at work, not while it is being spawned
    return evaluation, nodes[0]


@pytest.mark.ros
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_bag_evaluate_ends_its_node(tmp_path: Path, sig: int):
    evaluation, node = _start_evaluation(tmp_path)
    try:
        assert node.is_running()
        evaluation.send_signal(sig)
        evaluation.wait(30)
        _gone, alive = psutil.wait_procs([node], timeout=15)
        assert not alive, f"m2s-segment (pid {node.pid}) outlived the evaluation killed with {sig!r}"
        # nothing that looks complete is left behind: the earlier run's metrics.json went at the start
        assert not (tmp_path / "out" / "metrics.json").exists()
        assert not (tmp_path / "out" / "output_bag").exists()
        if sig == signal.SIGTERM:  # unwound like Ctrl-C: no temporaries either (SIGKILL leaves a hidden one)
            assert not list((tmp_path / "out").glob(".output_bag.*"))
    finally:
        if node.is_running():
            node.kill()
        if evaluation.poll() is None:
            evaluation.kill()
