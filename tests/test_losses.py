"""Weighted cross-entropy + Lovász-softmax: hand-computed values, perfect logits, the ignore label."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m2s_training.losses import LossConfig, SegmentationLoss, class_weights_from_counts, lovasz_softmax


def test_lovasz_softmax_by_hand():
    # two points, labels 1 and 2; class 0 has probability 0 everywhere
    probs = torch.tensor([[0.0, 0.8, 0.2], [0.0, 0.3, 0.7]])
    labels = torch.tensor([1, 2])
    # class 1: errors (0.2, 0.3) sorted → (0.3 bg, 0.2 fg), Jaccard steps (0.5, 0.5) → 0.25
    # class 2: errors (0.2, 0.3) sorted → (0.3 fg, 0.2 bg), Jaccard steps (1, 0)   → 0.30
    assert lovasz_softmax(probs, labels).item() == pytest.approx((0.25 + 0.30) / 2)


def test_lovasz_ignores_label_zero_points():
    probs = torch.tensor([[0.0, 0.8, 0.2], [0.0, 0.3, 0.7], [0.9, 0.05, 0.05]])
    assert lovasz_softmax(probs, torch.tensor([1, 2, 0])).item() == pytest.approx(0.275)


def test_perfect_logits_give_near_zero_loss():
    labels = torch.tensor([1, 2, 3, 3, 9, 19])
    logits = 30.0 * F.one_hot(labels, 20).float()
    terms = SegmentationLoss(torch.ones(20)).forward(logits, labels)
    assert terms["ce"].item() < 1e-6
    assert terms["lovasz"].item() < 1e-6
    wrong = SegmentationLoss(torch.ones(20)).forward(logits.roll(1, dims=1), labels)
    assert wrong["ce"].item() > 10 and wrong["lovasz"].item() > 0.9


def test_ignored_points_do_not_change_loss_or_get_gradient():
    torch.manual_seed(0)
    labels = torch.tensor([1, 2, 0, 0, 5])
    logits = torch.randn(5, 20, requires_grad=True)
    loss = SegmentationLoss(torch.rand(20) + 0.5)
    total = sum(loss(logits, labels).values())
    total.backward()
    assert torch.all(logits.grad[2:4] == 0)
    scrambled = logits.detach().clone()
    scrambled[2:4] = torch.randn(2, 20) * 100
    assert sum(loss(scrambled, labels).values()).item() == pytest.approx(total.item(), rel=1e-6)


def test_all_ignored_gives_zero_with_graph():
    logits = torch.randn(4, 20, requires_grad=True)
    terms = SegmentationLoss(torch.ones(20))(logits, torch.zeros(4, dtype=torch.long))
    total = sum(terms.values())
    assert total.item() == 0.0
    total.backward()  # still connected to the graph (DDP ranks must all backprop)


def test_weighted_ce_matches_formula_and_config_weights():
    logits = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([1, 2])
    weights = torch.tensor([0.0, 1.0, 3.0])
    nll = -F.log_softmax(logits, dim=1)[[0, 1], [1, 2]]
    expected = (1.0 * nll[0] + 3.0 * nll[1]) / (1.0 + 3.0)
    terms = SegmentationLoss(weights, LossConfig(ce_weight=2.0, lovasz_weight=0.0))(logits, labels)
    assert terms["ce"].item() == pytest.approx(2.0 * expected.item())
    assert terms["lovasz"].item() == 0.0


def test_fused_points_weight_in_the_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([1, 2, 1])
    is_fused = torch.tensor([False, False, True])
    weights = torch.tensor([0.0, 1.0, 3.0])
    nll = -F.log_softmax(logits, dim=1)[[0, 1, 2], [1, 2, 1]]
    ce_only = dict(lovasz_weight=0.0)

    def ce(fused_weight: float) -> float:
        loss = SegmentationLoss(weights, LossConfig(fused_weight=fused_weight, **ce_only))
        return loss(logits, labels, is_fused)["ce"].item()

    all_points = (nll[0] + 3.0 * nll[1] + nll[2]) / 5.0
    assert ce(1.0) == pytest.approx(all_points.item())
    assert ce(0.5) == pytest.approx(((nll[0] + 3.0 * nll[1] + 0.5 * nll[2]) / 4.5).item())
    own_only = SegmentationLoss(weights)(logits[:2], labels[:2])
    for name, value in SegmentationLoss(weights, LossConfig(fused_weight=0.0))(logits, labels, is_fused).items():
        assert value.item() == pytest.approx(own_only[name].item()), name  # input only: Lovász too
    with pytest.raises(ValueError, match="fused_weight"):
        LossConfig(fused_weight=-1.0)


def test_class_weights_inverse_sqrt_frequency():
    weights = class_weights_from_counts(np.array([100, 400, 100, 0]), power=0.5).numpy()
    # frequencies of the labelled classes: 0.8, 0.2 → 1/sqrt: 1.118, 2.236 → mean-1 normalised: 2/3, 4/3
    np.testing.assert_allclose(weights, [0.0, 2 / 3, 4 / 3, 4 / 3], rtol=1e-6)
    np.testing.assert_allclose(class_weights_from_counts(np.array([5, 400, 100]), power=0.0).numpy(), [0, 1, 1])
    with pytest.raises(ValueError, match="no labelled points"):
        class_weights_from_counts(np.array([10, 0, 0]))
