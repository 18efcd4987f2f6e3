"""The shipped demo weights and `python -m m2s_training.demo` (what `make demo` runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from m2s_perception.checkpoint import load_model
from m2s_training.demo import DEMO_WEIGHTS, main

MAX_WEIGHTS_BYTES = 20 * 1024 * 1024


def test_demo_weights_are_small_and_load_with_the_current_model_code():
    assert DEMO_WEIGHTS.stat().st_size < MAX_WEIGHTS_BYTES
    model, config, _meta = load_model(DEMO_WEIGHTS, "cpu")  # fails if the backbone's parameters changed
    assert (config.backbone, config.width, config.grid_size) == ("polar", 0.5, (120, 180, 24))
    assert not model.training


def test_demo_runs_the_node_end_to_end(tmp_path: Path, capsys):
    assert main(["--out", str(tmp_path), "--scans", "3"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "bag_eval" / "metrics.json").read_text())
    assert (metrics["scans"], metrics["scans_dropped"]) == (3, 0)
    assert f"mIoU {metrics['miou']:.4f} over 3/3 scans" in printed
    assert "latency publish→receive: p50" in printed
    assert str(tmp_path / "bev.png") in printed and (tmp_path / "bev.png").stat().st_size > 0
    assert (tmp_path / "bag_eval" / "output_bag" / "metadata.yaml").is_file()
    # The trained demo weights must beat chance (1/19 ≈ 0.05 on a uniform guess) on unseen scenes.
    assert metrics["miou"] > 0.15 and np.isfinite(metrics["latency_ms"]["p50"])
