"""bench/sensor_matching.py: each label-free change to a scan, checked by hand on made-up scans."""

import numpy as np
import torch
from torch import nn

from bench.sensor_matching import adapted_to, with_ground_remission_shuffled, with_range_noise


def test_range_noise_moves_points_along_their_rays_by_the_asked_spread():
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-30, 30, (20000, 3)), rng.uniform(0, 1, 20000)].astype(np.float32)
    noisy = with_range_noise(points, 0.025, np.random.default_rng(1))
    before, after = np.linalg.norm(points[:, :3], axis=1), np.linalg.norm(noisy[:, :3], axis=1)
    np.testing.assert_allclose(noisy[:, :3] / after[:, None], points[:, :3] / before[:, None], atol=1e-5)
    assert abs(np.std(after - before) - 0.025) < 0.001 and abs(np.mean(after - before)) < 0.001
    np.testing.assert_array_equal(noisy[:, 3], points[:, 3])


def flat_street(ground: int = 4000, wall: int = 500) -> np.ndarray:
    """Ground at z = -1.7 from 3 to 20 m (remission 0, 1, 2, ... in order), a wall 1–3 m above it."""
    rng = np.random.default_rng(2)
    angle, distance = rng.uniform(-np.pi, np.pi, ground), rng.uniform(3, 20, ground)
    floor = np.c_[distance * np.cos(angle), distance * np.sin(angle), np.full(ground, -1.7), np.arange(ground)]
    high = np.c_[rng.uniform(5, 10, wall), rng.uniform(-5, 5, wall), rng.uniform(-0.7, 1.3, wall), -np.ones(wall)]
    return np.concatenate([floor, high]).astype(np.float32)


def test_ground_remission_trades_places_only_within_windows_of_ground_returns():
    points = flat_street()
    shuffled = with_ground_remission_shuffled(points, 4, np.random.default_rng(3))
    np.testing.assert_array_equal(shuffled[:, :3], points[:, :3])
    np.testing.assert_array_equal(shuffled[4000:], points[4000:])  # the wall keeps its remission
    for start in range(0, 4000, 4):  # ground returns are the first 4000, in order: windows of 4
        assert sorted(shuffled[start : start + 4, 3]) == list(range(start, start + 4))
    assert (shuffled[:4000, 3] != points[:4000, 3]).mean() > 0.5


def test_a_scan_without_a_ground_plane_is_left_as_it_is():
    points = flat_street()[:40]  # fewer than the 50 candidates a plane needs
    np.testing.assert_array_equal(with_ground_remission_shuffled(points, 4, np.random.default_rng(0)), points)


class Tiny(nn.Module):
    """A linear layer and a batch norm, called as the segmentation networks are."""

    def __init__(self):
        super().__init__()
        self.linear, self.norm = nn.Linear(4, 3), nn.BatchNorm1d(3)

    def forward(self, points, batch_index, batch_size):
        return self.norm(self.linear(points))


def test_scan_norms_blend_the_trained_statistics_with_the_scans_own():
    torch.manual_seed(0)
    model = Tiny().eval()
    model.norm.running_mean.fill_(2.0)
    model.norm.running_var.fill_(5.0)
    cloud = torch.randn(1000, 4) * 3 + 1
    with torch.no_grad():
        features = model.linear(cloud)
    mean, var = features.mean(0), features.var(0, unbiased=True)  # what BatchNorm keeps as running_var

    alone = adapted_to(model, cloud, keep=0.0)
    torch.testing.assert_close(alone.norm.running_mean, mean)
    torch.testing.assert_close(alone.norm.running_var, var)
    half = adapted_to(model, cloud, keep=0.5)
    torch.testing.assert_close(half.norm.running_mean, (mean + 2.0) / 2)
    torch.testing.assert_close(half.norm.running_var, (var + 5.0) / 2)
    assert not half.training and half.norm.momentum == model.norm.momentum
    torch.testing.assert_close(half.linear.weight, model.linear.weight)
    assert torch.all(model.norm.running_mean == 2.0) and torch.all(model.norm.running_var == 5.0)  # the model untouched
