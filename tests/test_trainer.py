"""The one trainer on a tiny synthetic sequence: the loss falls, resume is exact, DDP on 2 CPU processes."""

import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from m2s_perception.checkpoint import read_checkpoint
from m2s_perception.inference import Segmenter
from m2s_perception.models import ModelConfig, build_model
from m2s_training.checkpoint import save_checkpoint
from m2s_training.config import (
    DataConfig,
    DistillConfig,
    LoopConfig,
    OptimConfig,
    TrainConfig,
    config_to_dict,
    load_config,
    override,
)
from m2s_training.data.dataset import AugmentConfig
from m2s_training.reporting import CsvLog
from m2s_training.synth import generate
from m2s_training.trainer import RUN_FILES, Trainer

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
    for name in ("last.pt", "best.pt", "final.pt", "log.csv", "curves.png", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    names = {r["name"] for r in CsvLog.read(out / "log.csv")}
    assert {"ce", "lovasz", "loss", "lr", "miou", "hard_miou", "accuracy"} <= names
    best = read_checkpoint(out / "best.pt")
    assert best["meta"]["val_miou"] == pytest.approx(metrics.miou) and "training_state" not in best
    last, final = read_checkpoint(out / "last.pt"), read_checkpoint(out / "final.pt")
    assert last["training_state"]["step"] == 12
    # final.pt: last.pt's weights, without the optimiser state
    assert final["meta"]["step"] == 12 and "training_state" not in final
    assert final["meta"]["val_miou"] == pytest.approx(metrics.miou)  # validation runs at the last step
    assert final["state_dict"].keys() == last["state_dict"].keys()
    assert all(torch.equal(final["state_dict"][k], v) for k, v in last["state_dict"].items())
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


def test_range_view_loss_falls_and_its_checkpoint_labels_scans(synth, tmp_path):
    out = tmp_path / "run"
    config = tiny_config("range", train__max_steps=20, model__image_size=(16, 128), model__levels=3)
    Trainer(config, synth, out, device="cpu").fit()
    losses = train_losses(out)
    assert losses[-1] < 0.8 * losses[0], losses
    prediction = Segmenter.from_checkpoint(out / "final.pt", "cpu").predict(np.ones((5, 4), np.float32))
    assert prediction.labels.shape == (5,) and prediction.labels.min() >= 1


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
    with pytest.raises(ValueError, match="fusion"):
        tiny_config(train__mode="m2skd")
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
    names = ["best.pt", "config.yaml", "curves.png", "final.pt", "last.pt", "log.csv"]
    assert sorted(p.name for p in out.iterdir()) == names


def tiny_teacher(tmp_path: Path) -> Path:
    """An untrained half-width teacher on tiny_config's grid: enough for the distillation's arithmetic."""
    model_config = dataclasses.replace(tiny_config().model, width=0.5)
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, build_model(model_config), model_config)
    return path


def distill_config(teacher: Path, **values) -> TrainConfig:
    """Every distillation term on, the sampled ones (instance, point and voxel affinity) included."""
    every_term = {f"distill__{name.removeprefix('kd_')}": 1.0 for name in DistillConfig().weights()}
    every_term |= {"distill__feature_names": ["bev_decoder", "point_mlp"], "distill__supervoxels_sampled": 4}
    every_term |= {"distill__supervoxel_cells": [4, 4, 2], "train__teacher": str(teacher)}
    return tiny_config(train__mode="distill", fusion={}, **every_term, **values)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    b_state = b.state_dict()
    for name, value in a.state_dict().items():
        assert torch.equal(value, b_state[name]), name


def straight_and_resumed(config: TrainConfig, synth: Path, tmp_path: Path, stop_at: int) -> tuple[Trainer, Trainer]:
    """One uninterrupted run, and one stopped at ``stop_at`` then resumed (in ``tmp_path / "interrupted"``)."""
    straight = Trainer(config, synth, tmp_path / "straight", device="cpu")
    straight.fit()
    Trainer(config, synth, tmp_path / "interrupted", device="cpu").fit(stop_at_step=stop_at)
    torch.manual_seed(12345)  # whatever the global RNG holds when a run resumes, the run continues the same
    resumed = Trainer(config, synth, tmp_path / "interrupted", device="cpu", resume=True)
    resumed.fit()
    assert resumed.step == straight.step == config.train.max_steps
    assert_same_weights(resumed.model, straight.model)
    return straight, resumed


def test_distill_resume_continues_exactly(synth, tmp_path):
    config = dataclasses.replace(distill_config(tiny_teacher(tmp_path), train__max_steps=6), augment=AugmentConfig())
    straight, resumed = straight_and_resumed(config, synth, tmp_path, stop_at=3)
    assert straight.train_set[3].is_fused.any() and straight.extra_params  # fused input, trained adapters
    assert_same_weights(resumed.extra_loss.adapters, straight.extra_loss.adapters)
    logged = {r["name"] for r in CsvLog.read(tmp_path / "interrupted" / "log.csv")}
    assert {"kd_instance_affinity", "kd_point_affinity", "kd_voxel_affinity"} <= logged


def test_resume_refuses_a_changed_config_but_allows_a_longer_run(synth, tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(train__max_steps=2), synth, out, device="cpu").fit()
    with pytest.raises(ValueError) as refused:
        Trainer(tiny_config(train__max_steps=2, optim__lr=0.01), synth, out, device="cpu", resume=True)
    assert "optim.lr: 0.03 → 0.01" in str(refused.value)
    with pytest.raises(ValueError, match=r"model\.width: 0\.25 → 0\.5"):
        Trainer(tiny_config(model__width=0.5), synth, out, device="cpu", resume=True)
    with pytest.raises(ValueError, match="was a student run"):
        Trainer(distill_config(tiny_teacher(tmp_path)), synth, out, device="cpu", resume=True)
    longer = Trainer(tiny_config(train__max_steps=4, train__log_every=1), synth, out, device="cpu", resume=True)
    assert longer.step == 2
    longer.fit()
    assert read_checkpoint(out / "last.pt")["training_state"]["step"] == 4


def test_resume_removes_the_temporaries_a_killed_write_left(synth, tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(train__max_steps=1), synth, out, device="cpu").fit()
    # what atomic_path leaves when SIGKILL lands mid-write: a mkdtemp directory beside the target
    killed_write = out / ".last.pt.k1ll3d_x"
    (killed_write).mkdir()
    (killed_write / "last.pt").write_bytes(b"half a checkpoint")
    not_ours = [out / ".last.pt.notes", out / ".last.pt.abcdefgh.bak"]
    for path in not_ours:
        path.mkdir()
    Trainer(tiny_config(train__max_steps=2), synth, out, device="cpu", resume=True)
    assert not killed_write.exists()
    assert all(path.is_dir() for path in not_ours)


def test_a_label_map_from_the_config_sets_the_classes_of_the_run_and_of_m2s_eval(synth, tmp_path):
    from m2s_training.evaluate import main as m2s_eval
    from tests.test_config import small_label_map

    label_map = small_label_map(tmp_path)
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(label_map=str(label_map), train__max_steps=2), synth, out, device="cpu")
    trainer.fit()
    checkpoint = read_checkpoint(out / "best.pt")
    assert checkpoint["class_names"] == ["unlabeled", "car", "road"]
    assert checkpoint["model_config"]["num_classes"] == 3 and trainer.model.head.out_features == 3 * 8
    assert load_config(out / "config.yaml").label_map == str(label_map.resolve())

    common = ["--checkpoint", str(out / "best.pt"), "--data", str(synth), "--device", "cpu"]
    with pytest.raises(SystemExit, match=r"predicts 3 classes but the label map has 20.*m2s-eval --label-map"):
        m2s_eval([*common, "--out", str(tmp_path / "wrong")])
    m2s_eval([*common, "--out", str(tmp_path / "eval"), "--label-map", str(label_map)])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["iou"]) == ["car", "road"]


def test_kill_9_at_a_random_moment_then_resume_gives_the_uninterrupted_weights(synth, tmp_path):
    """One SIGKILL in a real m2s-train process; bench/kill_resume.py repeats it many times, both modes."""
    config_path = tmp_path / "config.yaml"
    config = dataclasses.replace(tiny_config(train__max_steps=12, train__checkpoint_every=1), augment=AugmentConfig())
    config_path.write_text(yaml.safe_dump(config_to_dict(config)))
    train = [sys.executable, "-m", "m2s_training.train", "--config", str(config_path), "--data", str(synth)]
    train += ["--device", "cpu", "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: both processes add up floats in the same order
    subprocess.run(
        [*train, str(tmp_path / "straight")], cwd=REPO, env=env, capture_output=True, timeout=120, check=True
    )

    out = tmp_path / "killed"
    process = subprocess.Popen([*train, str(out)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not (out / "last.pt").exists():  # a kill before the first checkpoint would leave nothing to resume
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    delay = random.uniform(0.0, 1.5)  # the remaining 11 steps take ~4 s: the kill lands mid-run, anywhere
    time.sleep(delay)
    process.kill()
    process.wait()
    killed_at = read_checkpoint(out / "last.pt")["training_state"]["step"]
    assert killed_at < 12, f"the run ended before the kill ({delay:.2f} s after its first checkpoint)"
    resume = subprocess.run([*train, str(out), "--resume"], cwd=REPO, env=env, capture_output=True)
    assert resume.returncode == 0, resume.stderr[-2000:]

    straight, resumed = read_checkpoint(tmp_path / "straight" / "last.pt"), read_checkpoint(out / "last.pt")
    assert resumed["training_state"]["step"] == 12
    for name, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), f"{name} differs (killed at step {killed_at})"
    written = sorted(name for name in RUN_FILES if name != "averaged.pt")  # no weight averaging in this run
    assert sorted(p.name for p in out.iterdir()) == written  # no temporaries of the killed write


def m2skd_config(**values) -> TrainConfig:
    """The official fusion (no poses, centroid shifts) over one previous scan: the tiny sequences are short.

    Every hard class is fused: the tiny scenes' things are mostly cars and people."""
    fusion = {"placement": "centroid", "k_previous": 1, "full_history_only": True}
    return tiny_config(train__mode="m2skd", fusion=fusion, loss__class_weight_power=0.0, **values)


def test_m2skd_mode_trains_one_network_on_both_views(synth, tmp_path):
    trainer = Trainer(m2skd_config(train__max_steps=4), synth, tmp_path / "run", device="cpu")
    assert trainer.extra_params == []  # no adapters, no second network: the teacher view is the model itself
    batch = next(iter(trainer._epoch_loader(0)))
    assert batch.is_fused.any()  # fused hard-class points reach the teacher view…
    output, terms = trainer.loss_terms(batch)
    assert len(output.point_logits) == int((~batch.is_fused).sum())  # …and never the task loss's view
    assert {"ce", "lovasz", "m2skd_teacher_ce", "m2skd_logit", "m2skd_affinity"} <= set(terms)

    # The teacher-view CE trains the shared weights (through the fused forward); the logit term's
    # teacher side is detached, so its gradient is the student view's alone.
    trainer.model.zero_grad()
    terms["m2skd_teacher_ce"].backward(retain_graph=True)
    assert terms["m2skd_teacher_ce"] > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())

    trainer.fit()
    logged = {r["name"] for r in CsvLog.read(tmp_path / "run" / "log.csv")}
    assert {"m2skd_teacher_ce", "m2skd_logit", "m2skd_affinity", "miou"} <= logged
    student = Segmenter.from_checkpoint(tmp_path / "run" / "best.pt", "cpu")
    assert student.predict(np.ones((3, 4), np.float32)).labels.shape == (3,)


def test_m2skd_resume_continues_exactly(synth, tmp_path):
    config = dataclasses.replace(m2skd_config(train__max_steps=4), augment=AugmentConfig())
    straight_and_resumed(config, synth, tmp_path, stop_at=2)


def test_distill_into_a_student_with_a_point_branch(synth, tmp_path):
    """PVKD's point-level KD on per-point logits: the student's point branch trains with every term on."""
    config = distill_config(tiny_teacher(tmp_path), train__max_steps=2, model__point_branch=True)
    trainer = Trainer(config, synth, tmp_path / "run", device="cpu")
    head_before = [p.detach().clone() for p in trainer.model.point_head.parameters()]
    trainer.fit()
    assert any(not torch.equal(a, b) for a, b in zip(head_before, trainer.model.point_head.parameters(), strict=True))
    logged = {r["name"] for r in CsvLog.read(tmp_path / "run" / "log.csv")}
    assert {"kd_logit_point", "kd_point_affinity"} <= logged
