"""The pieces a training run is built from: schedule and extra loss per mode (values by hand)."""

import pytest
import torch

from m2s_perception.labels import load_label_map
from m2s_perception.models import build_model
from m2s_training.config import OptimConfig, TrainConfig
from m2s_training.distributed import Distributed
from m2s_training.run_setup import build_extra_loss, lr_factor


def test_lr_factor_warms_up_linearly_then_follows_the_cosine_to_its_floor():
    optim = OptimConfig(warmup_steps=10, min_lr_ratio=0.1)
    # warm-up: (step + 1) / 10
    assert lr_factor(0, 110, optim) == pytest.approx(0.1)
    assert lr_factor(4, 110, optim) == pytest.approx(0.5)
    assert lr_factor(9, 110, optim) == pytest.approx(1.0)
    # cosine over the 100 steps after warm-up: 0.1 + 0.9 * (1 + cos(pi * p)) / 2
    assert lr_factor(10, 110, optim) == pytest.approx(1.0)
    assert lr_factor(35, 110, optim) == pytest.approx(0.1 + 0.9 * (1 + 2**-0.5) / 2)  # p = 1/4
    assert lr_factor(60, 110, optim) == pytest.approx(0.55)  # p = 1/2
    assert lr_factor(110, 110, optim) == pytest.approx(0.1)
    assert lr_factor(500, 110, optim) == pytest.approx(0.1)  # past the end: stays at the floor


def _config(mode: str) -> TrainConfig:
    config = TrainConfig()
    config.train.mode = mode
    return config


def test_student_and_teacher_runs_add_no_loss_and_m2skd_refuses_several_processes():
    label_map = load_label_map(None)
    config = _config("student")
    model = build_model(config.model)
    weights = torch.ones(label_map.num_classes)
    one, two = Distributed(), Distributed(rank=0, world_size=2)
    for mode in ("student", "teacher"):
        assert build_extra_loss(_config(mode), model, label_map, weights, torch.device("cpu"), one) is None
    with pytest.raises(ValueError, match="one process"):
        build_extra_loss(_config("m2skd"), model, label_map, weights, torch.device("cpu"), two)
    extra = build_extra_loss(_config("m2skd"), model, label_map, weights, torch.device("cpu"), one)
    assert extra is not None and type(extra).__name__ == "JointM2skd"
