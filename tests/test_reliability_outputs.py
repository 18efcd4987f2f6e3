"""Run outputs never go stale (issue 12 item 7).

Before the fixes: an interrupted ``m2s-eval`` left the previous run's ``metrics.json`` beside its
partial predictions; an interrupted regeneration of a synthetic sequence kept the old poses and
times beside new scans; the fusion cache was keyed by path only and served the old fused points
after the data under that path was regenerated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m2s_training.data import semantic_kitti as sk
from m2s_training.evaluate import evaluate
from m2s_training.fusion import MultiScanFuser
from m2s_training.synth import generate
from m2s_training.synth import generator as synth_generator
from tests.test_bag import _tiny_checkpoint, write_tiny_sequence


def test_interrupted_m2s_eval_leaves_no_metrics_json(tmp_path: Path):
    root = write_tiny_sequence(tmp_path / "kitti")
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "eval"
    first = evaluate(checkpoint, root, "val", out, device="cpu")
    assert json.loads((out / "metrics.json").read_text())["scans"] == first["scans"] == 5

    (root / "sequences" / "08" / "labels" / "000003.label").write_bytes(b"\0" * 6)  # fails at scan 3 of 5
    with pytest.raises(sk.KittiFormatError, match=r"000003\.label"):
        evaluate(checkpoint, root, "val", out, device="cpu")
    assert not (out / "metrics.json").exists(), "the earlier run's metrics.json sits beside partial output"


def test_interrupted_regeneration_keeps_the_old_sequence_whole(tmp_path: Path, monkeypatch):
    generate(tmp_path, ["08"], preset="tiny", scans=3, seed=1)
    folder = tmp_path / "sequences" / "08"
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    real_scan = synth_generator.SequenceSimulator.scan

    def crash_at_scan_2(self, index):
        if index == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the regeneration
        return real_scan(self, index)

    monkeypatch.setattr(synth_generator.SequenceSimulator, "scan", crash_at_scan_2)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, ["08"], preset="tiny", scans=3, seed=2)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before  # old scans with old poses: consistent; never new scans with old poses
    assert sorted(p.name for p in (tmp_path / "sequences").iterdir()) == ["08"]  # no temporaries

    monkeypatch.setattr(synth_generator.SequenceSimulator, "scan", real_scan)
    generate(tmp_path, ["08"], preset="tiny", scans=3, seed=2)
    fresh = tmp_path / "fresh"
    generate(fresh, ["08"], preset="tiny", scans=3, seed=2)
    regenerated = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    reference = {p.relative_to(fresh / "sequences" / "08"): p.read_bytes()
                 for p in (fresh / "sequences" / "08").rglob("*") if p.is_file()}  # fmt: skip
    assert regenerated == reference  # the rerun equals an uninterrupted run


def test_fusion_cache_follows_the_data_not_the_path(tmp_path: Path):
    generate(tmp_path / "data", ["08"], preset="tiny", scans=3, seed=1)
    cache = tmp_path / "cache"
    old = MultiScanFuser(k_previous=2, cache_dir=cache).fuse(sk.Sequence(tmp_path / "data", "08"), 2)

    generate(tmp_path / "data", ["08"], preset="tiny", scans=3, seed=2)  # same path, new scenes
    sequence = sk.Sequence(tmp_path / "data", "08")
    cached = MultiScanFuser(k_previous=2, cache_dir=cache).fuse(sequence, 2)
    recomputed = MultiScanFuser(k_previous=2).fuse(sequence, 2)
    assert len(recomputed) > 0 and not np.array_equal(old.points, recomputed.points)
    np.testing.assert_array_equal(cached.points, recomputed.points)
    np.testing.assert_array_equal(cached.semantic, recomputed.semantic)
    # and an unchanged sequence is still served from the cache
    assert MultiScanFuser(k_previous=2, cache_dir=cache).cache_path(sequence, 2).is_file()
