"""bench/class_ceiling.py: margins and the best threshold's IoU, counted by hand."""

import math

import numpy as np
import pytest
import torch

from bench.class_ceiling import argmax_iou, best_threshold_iou, margins


def test_the_margin_is_against_the_most_probable_other_real_class():
    probability = torch.tensor([[0.1, 0.6, 0.3], [0.9, 0.04, 0.06]])  # column 0: 'unlabeled', never a rival
    np.testing.assert_allclose(margins(probability, 2), [math.log(0.3 / 0.6), math.log(0.06 / 0.04)], rtol=1e-6)


def test_the_best_threshold_is_found_among_every_cut():
    margin = np.array([1.0, -1.0, 3.0, 0.5, 2.0])  # sorted: 3 (yes), 2 (no), 1 (yes), 0.5 (no), -1 (no)
    is_class = np.array([True, False, True, False, False])
    # cuts: 1/2, 1/3, 2/3, 2/4, 2/5 -> the third, at margin 1.0, calling 3 points
    iou, at, called = best_threshold_iou(margin, is_class)
    assert iou == pytest.approx(2 / 3) and at == 1.0 and called == 3
    assert argmax_iou(margin, is_class) == pytest.approx(2 / 4)  # margin > 0: 4 points called, 2 of them right
    assert best_threshold_iou(margin, np.zeros(5, bool)) == (0.0, float("inf"), 0)
