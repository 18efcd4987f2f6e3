"""m2s-recalibrate: batch-norm statistics of whole scans, checked against numpy means by hand."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import tiny_config

from m2s_perception.checkpoint import load_model, read_checkpoint
from m2s_perception.models import build_model
from m2s_perception.models.ensemble import Ensemble
from m2s_training.checkpoint import save_checkpoint
from m2s_training.data.semantic_kitti import write_scan
from m2s_training.recalibrate import recalibrate

CONFIG = tiny_config().model  # the trainer tests' few-second polar model
INPUT_NORM = "point_encoder.mlp.0"  # normalises x, y, z, rho, phi, remission, cell offsets (models/grid.py)


def cloud(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rho, phi = rng.uniform(3, 40, count), rng.uniform(-np.pi, np.pi, count)
    z, remission = rng.normal(-1.0 - seed, 0.5, count), rng.uniform(0, 0.2 * (seed + 1), count)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z, remission], axis=1).astype(np.float32)


@pytest.fixture()
def scans(tmp_path) -> tuple[Path, list[np.ndarray]]:
    """Sequence 00 (train) with two scans of different sizes and statistics; 08 (val) with one."""
    clouds = [cloud(3000, 0), cloud(1200, 1)]
    for index, points in enumerate(clouds):
        write_scan(tmp_path / "data" / "sequences" / "00" / "velodyne" / f"{index:06d}.bin", points)
    write_scan(tmp_path / "data" / "sequences" / "08" / "velodyne" / "000000.bin", cloud(500, 2))
    return tmp_path / "data", clouds


def trained_like(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(CONFIG)
    norm = dict(model.named_modules())[INPUT_NORM]
    norm.running_mean.fill_(7.0)  # statistics of some other data
    norm.running_var.fill_(3.0)
    return model.eval()


def expected_input_statistics(clouds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One scan per batch: the plain mean over scans of each scan's mean and unbiased variance of
    x, y, z, rho and remission (input columns 0, 1, 2, 3, 5)."""
    columns = []
    for points in clouds:
        rho = np.hypot(points[:, 0], points[:, 1])
        picked = np.stack([points[:, 0], points[:, 1], points[:, 2], rho, points[:, 3]], axis=1)
        columns.append(picked.astype(np.float64))
    means = np.mean([c.mean(axis=0) for c in columns], axis=0)
    variances = np.mean([c.var(axis=0, ddof=1) for c in columns], axis=0)
    return means, variances


def input_statistics(state: dict, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    pick = [0, 1, 2, 3, 5]
    return (
        state[f"{prefix}{INPUT_NORM}.running_mean"].numpy()[pick],
        state[f"{prefix}{INPUT_NORM}.running_var"].numpy()[pick],
    )


def test_statistics_are_the_mean_over_whole_scans_and_weights_stay(scans, tmp_path):
    data, clouds = scans
    source = tmp_path / "student.pt"
    save_checkpoint(source, trained_like(0), CONFIG, step=1000, val_miou=0.25)
    before = source.read_bytes()
    used = recalibrate(source, data, tmp_path / "whole.pt", split="train", every=1, batch_size=1)
    assert used == 2  # sequence 08 is validation: not read
    assert source.read_bytes() == before
    old, new = read_checkpoint(source), read_checkpoint(tmp_path / "whole.pt")
    means, variances = expected_input_statistics(clouds)
    got_means, got_variances = input_statistics(new["state_dict"])
    np.testing.assert_allclose(got_means, means, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_variances, variances, rtol=1e-3)
    for name, value in old["state_dict"].items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, new["state_dict"][name]), name
    deeper = [n for n in old["state_dict"] if n.endswith("running_mean") and not n.startswith(INPUT_NORM)]
    assert deeper and all(not torch.equal(old["state_dict"][n], new["state_dict"][n]) for n in deeper)
    assert new["meta"]["step"] == 1000 and new["meta"]["batch_norm_recalibrated"]["scans"] == 2
    load_model(tmp_path / "whole.pt", "cpu")  # an ordinary checkpoint


def test_every_member_of_an_ensemble_is_recalibrated(scans, tmp_path):
    data, clouds = scans
    ensemble = Ensemble(dataclasses.replace(CONFIG, members=2), [trained_like(1), trained_like(2)])
    save_checkpoint(tmp_path / "ensemble.pt", ensemble, ensemble.config, mode="ensemble")
    recalibrate(tmp_path / "ensemble.pt", data, tmp_path / "whole.pt", every=1, batch_size=1)
    state = read_checkpoint(tmp_path / "whole.pt")["state_dict"]
    means, _ = expected_input_statistics(clouds)
    for member in (0, 1):
        np.testing.assert_allclose(input_statistics(state, f"members.{member}.")[0], means, rtol=1e-4, atol=1e-4)


def test_every_second_scan_and_batches_of_two(scans, tmp_path):
    data, clouds = scans
    save_checkpoint(tmp_path / "student.pt", trained_like(0), CONFIG)
    assert recalibrate(tmp_path / "student.pt", data, tmp_path / "first.pt", every=2) == 1
    means, _ = expected_input_statistics(clouds[:1])
    first = read_checkpoint(tmp_path / "first.pt")["state_dict"]
    np.testing.assert_allclose(input_statistics(first)[0], means, rtol=1e-4, atol=1e-4)
    # both scans in one batch: the statistics of the 4200 points together
    recalibrate(tmp_path / "student.pt", data, tmp_path / "pair.pt", every=1, batch_size=2)
    means, _ = expected_input_statistics([np.concatenate(clouds)])
    pair = read_checkpoint(tmp_path / "pair.pt")["state_dict"]
    np.testing.assert_allclose(input_statistics(pair)[0], means, rtol=1e-4, atol=1e-4)


def test_the_command_refuses_what_it_cannot_do(scans, tmp_path):
    data, _ = scans
    save_checkpoint(tmp_path / "student.pt", trained_like(0), CONFIG)
    (tmp_path / "taken.pt").write_bytes(b"a user's file")

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "m2s_training.recalibrate", "--checkpoint", str(tmp_path / "student.pt")]
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)

    taken = run("--data", str(data), "--out", str(tmp_path / "taken.pt"))
    assert taken.returncode != 0 and "exists" in taken.stderr
    assert (tmp_path / "taken.pt").read_bytes() == b"a user's file"
    no_data = run("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a.pt"))
    assert no_data.returncode != 0 and "no sequences/ folder" in no_data.stderr
    bad_every = run("--data", str(data), "--out", str(tmp_path / "b.pt"), "--every", "0")
    assert bad_every.returncode != 0 and "--every must be >= 1" in bad_every.stderr
    fine = run("--data", str(data), "--out", str(tmp_path / "c.pt"), "--every", "1")
    assert fine.returncode == 0, fine.stderr
    assert "2 whole scans" in fine.stdout and not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()
