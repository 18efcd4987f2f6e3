"""A 100-message subset of ``bench/fuzz_node.py`` against the real node process (the full 1000+ run
and the soak are in ``docs/reliability.md``). About 20 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.segment_process import REPO


@pytest.mark.ros
def test_node_survives_100_malformed_clouds_and_keeps_answering(tmp_path: Path):
    summary_path = tmp_path / "fuzz.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(
        [sys.executable, "bench/fuzz_node.py", "--messages", "100", "--seed", "1", "--json", str(summary_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert summary_path.is_file(), done.stdout + done.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["node_alive_at_end"], done.stdout
    assert summary["valid_answered"] == summary["valid_sent"] >= 10
    assert summary["unaccounted_messages"] == 0
    counters = summary["node_counters"]
    # every message was labelled or rejected (none dropped: one at a time), the malformed ones mostly rejected
    assert counters["scans_processed"] + counters["scans_rejected"] == 100 + summary["valid_sent"]
    assert counters["scans_rejected"] >= 50
    assert summary["rss_growth"] < 0.10 and summary["threads_end"] <= summary["threads_after_warmup"]
    assert done.returncode == 0, done.stdout
