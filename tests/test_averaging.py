"""Weight averaging (m2s_training/averaging.py) by hand, and through the trainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from m2s_perception.checkpoint import read_checkpoint
from m2s_training.averaging import WeightAverage, recalibrate_batch_norm
from m2s_training.trainer import Trainer
from tests.test_trainer import synth, tiny_config  # noqa: F401  (the module's fixture)


def test_running_mean_of_weights_by_hand():
    model = nn.Linear(2, 1)
    average = WeightAverage(model)
    for value in (1.0, 3.0, 8.0):
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(-value)
        average.update(model)
    target = nn.Linear(2, 1)
    average.copy_to(target)
    torch.testing.assert_close(target.weight, torch.full((1, 2), 4.0))  # (1 + 3 + 8) / 3
    torch.testing.assert_close(target.bias, torch.full((1,), -4.0))
    restored = WeightAverage(nn.Linear(2, 1))
    restored.load_state_dict(average.state_dict())
    assert restored.count == 3
    with pytest.raises(ValueError, match="no weights"):
        WeightAverage(model).copy_to(target)


def test_batch_norm_statistics_are_measured_again_as_a_plain_mean():
    model = nn.Sequential(nn.BatchNorm1d(1, momentum=0.1))
    model[0].running_mean.fill_(100.0)
    # batches [0, 2] and [4, 6]: means 1 and 5, unbiased variances 2 and 2
    batches = [torch.tensor([[0.0], [2.0]]), torch.tensor([[4.0], [6.0]])]
    used = recalibrate_batch_norm(model.eval(), batches, lambda m, b: m(b))
    assert used == 2
    torch.testing.assert_close(model[0].running_mean, torch.tensor([3.0]))
    torch.testing.assert_close(model[0].running_var, torch.tensor([2.0]))
    assert model[0].momentum == 0.1 and not model.training  # left as it was


def test_trainer_writes_averaged_weights(synth, tmp_path):  # noqa: F811
    # 6 steps, averaging from 5/6: only the last step's weights are averaged, so the averaged
    # parameters are the last ones exactly; the batch-norm statistics are measured anew
    config = tiny_config(train__max_steps=6, optim__average_from=5 / 6, optim__average_bn_batches=2)
    trainer = Trainer(config, synth, tmp_path / "run", device="cpu")
    trainer.fit()
    averaged = read_checkpoint(tmp_path / "run" / "averaged.pt")
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert averaged["meta"]["averaged_steps"] == 1 and "training_state" not in averaged
    parameters = dict(trainer.model.named_parameters())
    for name, value in averaged["state_dict"].items():
        if name in parameters:
            torch.testing.assert_close(value, last["state_dict"][name], rtol=0, atol=0)
    statistics = [n for n in averaged["state_dict"] if n.endswith("running_mean")]
    assert statistics and any(not torch.equal(averaged["state_dict"][n], last["state_dict"][n]) for n in statistics)
    assert last["training_state"]["average"]["count"] == 1  # a resumed run keeps its average
