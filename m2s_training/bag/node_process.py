"""The ``m2s-segment`` node as a child process of the bag tools: own process group, dies with its parent."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import m2s_perception

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def segment_command(params_file: Path) -> tuple[list[str], dict[str, str]]:
    """Command and environment of the node: its console script beside this interpreter (a venv)
    or on PATH; from a source checkout that was not pip-installed, ``python -m m2s_perception.node``."""
    env = dict(os.environ)
    beside = Path(sys.executable).parent / "m2s-segment"
    script = str(beside) if beside.exists() else shutil.which("m2s-segment")
    if script is not None:
        return [script, "--ros-args", "--params-file", str(params_file)], env
    source_root = str(Path(m2s_perception.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    return [sys.executable, "-m", "m2s_perception.node", "--ros-args", "--params-file", str(params_file)], env


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the parent dies, even by ``kill -9``.

    SIGTERM, not SIGKILL: the node then shuts down rclpy and removes its Fast DDS shared-memory
    segment (a SIGKILLed DDS process leaves it in /dev/shm).
    """
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class NodeProcess:
    """The ``m2s-segment`` process, its log in ``OUT/node.log``; stopped with SIGINT, then killed.

    It runs in its own process group (whatever it spawns is stopped with it) and, on Linux, gets
    SIGTERM from the kernel when the evaluating process dies, so no node outlives the evaluation.
    """

    def __init__(self, params_file: Path, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        command, env = segment_command(params_file)
        linux = sys.platform.startswith("linux")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if linux else None,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGINT to the node's process group, SIGKILL to the group after 10 s."""
        if self.alive():
            self._signal_group(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # anything the node left in its group
        self.process.wait()
        self._log.close()

    def _signal_group(self, sig: int) -> None:
        with suppress(ProcessLookupError):  # the group is already gone
            os.killpg(self.process.pid, sig)
