"""The one trainer on a tiny synthetic sequence: the loss falls, resume is exact, DDP on 2 CPU processes."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from m2s_perception.checkpoint import read_checkpoint
from m2s_perception.inference import Segmenter
from m2s_perception.models import ModelConfig
from m2s_training.config import DataConfig, LoopConfig, OptimConfig, TrainConfig, config_to_dict, load_config, override
from m2s_training.data.dataset import AugmentConfig
from m2s_training.reporting import CsvLog
from m2s_training.synth import generate
from m2s_training.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, ["00"], preset="tiny", scans=4, seed=0)
    generate(root, ["08"], preset="tiny", scans=2, seed=1)
    return root


def tiny_config(backbone: str = "polar", **values) -> TrainConfig:
    """A few-second CPU run; ``values``: dotted keys with "__" for "." (train__max_steps=6)."""
    model = ModelConfig(
        backbone=backbone,
        width=0.25,
        grid_size=(24, 24, 8),
        rho_range=(2.0, 50.0),
        point_channels=(16, 32),
        base_channels=16,
        levels=2,
    )
    no_augment = AugmentConfig(rotate=False, flip=False, scale=(1.0, 1.0), jitter_std=0.0)
    config = TrainConfig(
        model=model,
        data=DataConfig(batch_size=2, num_workers=0, max_train_points=4000),
        augment=no_augment,
        optim=OptimConfig(lr=0.03, warmup_steps=1, min_lr_ratio=0.3),
        train=LoopConfig(epochs=100, max_steps=12, val_every=0, checkpoint_every=1000, log_every=2),
    )
    return override(config, {key.replace("__", "."): value for key, value in values.items()})


def train_losses(out: Path) -> list[float]:
    return list(train_loss_by_step(out).values())


def train_loss_by_step(out: Path) -> dict[int, float]:
    rows = CsvLog.read(out / "log.csv")
    return {int(r["step"]): float(r["value"]) for r in rows if r["split"] == "train" and r["name"] == "loss"}


def test_polar_student_loss_falls_and_writes_a_run(synth, tmp_path):
    out = tmp_path / "run"
    metrics = Trainer(tiny_config(), synth, out, device="cpu").fit()
    losses = train_losses(out)
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses
    for name in ("last.pt", "best.pt", "log.csv", "curves.png", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    names = {r["name"] for r in CsvLog.read(out / "log.csv")}
    assert {"ce", "lovasz", "loss", "lr", "miou", "hard_miou", "accuracy"} <= names
    best = read_checkpoint(out / "best.pt")
    assert best["meta"]["val_miou"] == pytest.approx(metrics.miou) and "training_state" not in best
    assert read_checkpoint(out / "last.pt")["training_state"]["step"] == 12
    prediction = Segmenter.from_checkpoint(out / "best.pt", "cpu").predict(np.ones((5, 4), np.float32))
    assert prediction.labels.shape == (5,) and prediction.labels.min() >= 1
    # the run's config.yaml reloads into the same config
    assert config_to_dict(load_config(out / "config.yaml")) == config_to_dict(tiny_config())


@pytest.mark.slow
def test_cylinder_loss_falls(synth, tmp_path):
    pytest.importorskip("spconv")
    out = tmp_path / "run"
    Trainer(tiny_config("cylinder", train__max_steps=10), synth, out, device="cpu").fit()
    losses = train_losses(out)
    assert losses[-1] < 0.8 * losses[0], losses


def test_resume_continues_exactly(synth, tmp_path):
    config = dataclasses.replace(tiny_config(train__max_steps=6), augment=AugmentConfig())
    straight = Trainer(config, synth, tmp_path / "straight", device="cpu")
    straight.fit()

    interrupted = tmp_path / "interrupted"
    Trainer(config, synth, interrupted, device="cpu").fit(stop_at_step=3)
    assert read_checkpoint(interrupted / "last.pt")["training_state"]["step"] == 3
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(config, synth, interrupted, device="cpu")
    resumed = Trainer(config, synth, interrupted, device="cpu", resume=True)
    assert resumed.step == 3
    resumed.fit()

    assert resumed.step == straight.step == 6
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
    straight_moments = straight.optimizer.state_dict()["state"]
    for key, state in resumed.optimizer.state_dict()["state"].items():
        torch.testing.assert_close(state["exp_avg"], straight_moments[key]["exp_avg"], rtol=0, atol=1e-6)
    assert resumed.scheduler.get_last_lr() == pytest.approx(straight.scheduler.get_last_lr())
    # the interrupted run also logged at its stop (step 3), so its step-4 row averages one step only
    resumed_log, straight_log = train_loss_by_step(interrupted), train_loss_by_step(tmp_path / "straight")
    assert sorted(resumed_log) == [2, 3, 4, 6] and sorted(straight_log) == [2, 4, 6]
    assert [resumed_log[2], resumed_log[6]] == pytest.approx([straight_log[2], straight_log[6]], rel=1e-5)


def test_teacher_mode_needs_fusion_and_distill_needs_a_teacher():
    with pytest.raises(ValueError, match="fusion"):
        tiny_config(train__mode="teacher")
    with pytest.raises(ValueError, match="--teacher"):
        tiny_config(train__mode="distill")


def test_ddp_two_cpu_processes(synth, tmp_path):
    config = tiny_config(train__max_steps=None, train__epochs=1, train__checkpoint_every=1)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config_to_dict(config)))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "m2s_training.train", "--config", str(config_path), "--data", str(synth), "--out", str(out)]
    command += ["--device", "cpu"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]  # torchrun fails if any rank fails
    # 4 training scans, 2 ranks × batch 2: one step per epoch (a single process would need two)
    checkpoint = read_checkpoint(out / "last.pt")
    assert checkpoint["training_state"]["step"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "curves.png", "last.pt", "log.csv"]
