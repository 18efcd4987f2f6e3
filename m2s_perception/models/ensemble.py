"""Several trained networks of one config as one model: the mean of their class probabilities.

Students trained alike from different seeds make different mistakes on data unlike their training
data (real scans for a synthetic-only student); averaging their probabilities cancels part of them
(docs/benchmarks.md, "Sim-to-real": four half-width students averaged score higher on real scans
than any one of them, and than one full-width network with as many parameters). An ensemble is
assembled from trained checkpoints by ``m2s-ensemble``; it is not trained as one.

The output's logits are the log of the mean probability, so everything downstream (argmax over the
real classes, softmax confidence) reads the ensemble's probabilities with no special case.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2s_perception.models import ModelConfig, ModelOutput


def mean_probability_logits(logits: list[Tensor]) -> Tensor:
    """log(mean_i softmax(logits_i)): its softmax is the mean probability, its argmax the ensemble's label."""
    return mean_of_log_probabilities([F.log_softmax(x.float(), dim=1) for x in logits])


def mean_of_log_probabilities(log_probabilities: list[Tensor]) -> Tensor:
    """log(mean_i exp(log_probabilities_i)): the same, for members already turned into log-probabilities
    (bench/ensemble_spread.py keeps each network's once and averages them in many combinations)."""
    return torch.logsumexp(torch.stack(log_probabilities), dim=0) - math.log(len(log_probabilities))


def first_members(model: nn.Module, count: int, where: object = "model") -> tuple[nn.Module, ModelConfig]:
    """The first ``count`` networks of an ensemble (one network: that network), for a faster, less
    accurate model; ``count`` 1 of a single network is that network. ``where`` names it in errors."""
    available = model.config.members if isinstance(model, Ensemble) else 1
    if not 1 <= count <= available:
        raise ValueError(f"{where}: holds {available} network(s); cannot run the first {count}")
    if not isinstance(model, Ensemble):
        return model, model.config
    if count == 1:
        return model.members[0], model.member_config
    smaller = Ensemble(dataclasses.replace(model.config, members=count), list(model.members)[:count])
    return smaller, smaller.config


class Ensemble(nn.Module):
    """``config.members`` networks of ``config`` (with ``members=1``); weights ``members.<i>.<name>``.

    ``members``: networks already built (trained) to hold, instead of building new ones."""

    def __init__(self, config: ModelConfig, members: list[nn.Module] | None = None):
        from m2s_perception.models import build_model

        super().__init__()
        if config.members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {config.members}")
        if members is not None and len(members) != config.members:
            raise ValueError(f"config.members is {config.members} but {len(members)} networks were given")
        self.config = config
        self.member_config = dataclasses.replace(config, members=1)
        if members is None:
            members = [build_model(self.member_config) for _ in range(config.members)]
        self.members = nn.ModuleList(members)

    def forward(self, points: Tensor, batch_index: Tensor, batch_size: int) -> ModelOutput:
        outputs = [member(points, batch_index, batch_size) for member in self.members]
        # One grid for all: the members' voxels are the same cells in the same order.
        first = outputs[0]
        return ModelOutput(
            mean_probability_logits([o.point_logits for o in outputs]),
            mean_probability_logits([o.voxel_logits for o in outputs]),
            first.voxel_coords,
            first.point_to_voxel,
            first.point_features,  # features do not average across networks: the first member's, for shapes
        )
