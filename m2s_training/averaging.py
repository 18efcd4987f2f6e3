"""Weight averaging over the end of a run (stochastic weight averaging, Izmailov et al. 2018).

The mean of the weights visited over the last part of training sits in a flatter region of the
loss than any one of them, which is what tends to hold up under a change of domain (SWAD, Cha et
al. 2021). For m2s's sim-to-real students the seeds of one recipe disagree a lot on real scans and
their ensemble labels them better than either (docs/benchmarks.md "Sim-to-real", round 3); the
average is one network, as fast as the student.

Batch-norm statistics are not averaged: they belong to the running weights, so they are measured
again for the averaged ones on training batches (:func:`recalibrate_batch_norm`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class WeightAverage:
    """Equal-weight running mean of a model's parameters, one ``update`` per optimisation step."""

    def __init__(self, model: nn.Module):
        self.mean = {name: p.detach().clone().float() for name, p in model.named_parameters()}
        self.count = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.count += 1
        for name, p in model.named_parameters():
            if self.count == 1:
                self.mean[name].copy_(p.detach())
            else:
                self.mean[name] += (p.detach().float() - self.mean[name]) / self.count

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        if self.count == 0:
            raise ValueError("no weights were averaged")
        for name, p in model.named_parameters():
            p.copy_(self.mean[name].to(p.dtype))

    def state_dict(self) -> dict:
        return {"mean": {k: v.cpu() for k, v in self.mean.items()}, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean = {k: v.to(self.mean[k].device) for k, v in state["mean"].items()}
        self.count = state["count"]


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable, forward: Callable[[nn.Module, object], None]) -> int:
    """Reset every batch-norm layer's running statistics and measure them again as a plain mean over
    ``batches`` (``forward(model, batch)`` runs one); returns the number of batches used."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    was_training = model.training
    model.train()
    used = 0
    for batch in batches:
        forward(model, batch)
        used += 1
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return used


__all__ = ["WeightAverage", "recalibrate_batch_norm"]
