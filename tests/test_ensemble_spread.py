"""bench/ensemble_spread.py's arithmetic, by hand: the mean of probabilities, scored over the scans."""

import math

import torch

from bench.ensemble_spread import ensemble_labels, score


def _log(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).log()


def test_the_ensemble_labels_the_mean_probability_over_real_classes():
    a = _log([[0.01, 0.69, 0.29, 0.01], [0.70, 0.10, 0.15, 0.05]])
    b = _log([[0.01, 0.01, 0.48, 0.50], [0.70, 0.10, 0.15, 0.05]])
    # point 0: a says 1, b says 3; the mean (0.01, 0.35, 0.385, 0.255) says 2
    # point 1: 'unlabeled' (0) is the most probable, but never a label: the best real class, 2
    assert ensemble_labels([a, b]).tolist() == [2, 2]
    assert ensemble_labels([a]).tolist() == [1, 2]


def test_score_accumulates_every_scan():
    one = _log([[0.1, 0.6, 0.2, 0.1]])  # labels 1
    two = _log([[0.1, 0.1, 0.7, 0.1]])  # labels 2
    member = [one, two]  # its log-probabilities on scan 0 and scan 1
    targets = [torch.tensor([1]), torch.tensor([1])]  # both points are class 1
    # class 1: one hit, one miss -> IoU 1/2; class 2 absent from the truth -> not in the mean
    assert math.isclose(score([member], targets, 4), 0.5)
