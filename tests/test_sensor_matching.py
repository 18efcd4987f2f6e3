"""bench/sensor_matching.py: each label-free change to a scan, checked by hand on made-up scans."""

import numpy as np
import torch
from torch import nn

from bench.sensor_matching import (
    adapted_to,
    cell_means,
    connected_road,
    flooded,
    quiet_sensor,
    texture_terrain,
    with_ground_remission_shuffled,
    with_range_noise,
)
from m2s_perception.texture import median_ring_step


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


def test_cell_means_average_within_each_square():
    xy = np.array([[0.1, 0.1], [0.9, 0.5], [1.5, 0.2], [-0.5, 0.5]])
    np.testing.assert_allclose(cell_means(xy, np.array([1.0, 3.0, 10.0, 7.0]), 1.0), [2.0, 2.0, 10.0, 7.0])


def ground_rings(rough_noise: float, quiet_noise: float = 0.0005, seed: int = 4) -> np.ndarray:
    """Flat ground 1.73 m below the sensor, rings 5–20 m, 0.2° apart in azimuth, in the sensor's order; each
    range off by ``quiet_noise`` (relative), and by ``rough_noise`` 10–20 m away at azimuths 0–30°."""
    rng = np.random.default_rng(seed)
    distance, azimuth = np.meshgrid(np.arange(5.0, 21.0), np.radians(np.arange(0.0, 360.0, 0.2)), indexing="ij")
    distance, azimuth = distance.ravel(), azimuth.ravel()
    rough = (distance >= 10) & (azimuth < np.radians(30))
    scale = 1 + rng.normal(0, np.where(rough, rough_noise, quiet_noise))
    xyz = np.c_[distance * np.cos(azimuth), distance * np.sin(azimuth), np.full(len(distance), -1.73)] * scale[:, None]
    return np.c_[xyz, np.full(len(distance), 0.3)].astype(np.float32)


def test_ground_is_terrain_where_its_cells_read_rough_and_the_best_paved_class_elsewhere():
    points = ground_rings(rough_noise=0.01)
    azimuth = np.degrees(np.arctan2(points[:, 1], points[:, 0])) % 360
    distance = np.hypot(points[:, 0], points[:, 1])
    # classes: 0 unlabeled, 1 road, 2 sidewalk, 3 terrain, 4 building; every point sidewalk by its probability,
    # but for some smooth ones called terrain (road their best paved class) and a building in the rough patch
    probability = np.tile([0.5, 0.1, 0.3, 0.05, 0.05], (len(points), 1))
    smooth_terrain = (distance > 14) & (azimuth > 180) & (azimuth < 190)
    probability[smooth_terrain] = [0.0, 0.35, 0.2, 0.45, 0.0]
    wall = (distance > 14) & (azimuth > 10) & (azimuth < 12)
    probability[wall] = [0.0, 0.1, 0.1, 0.1, 0.7]

    labels = texture_terrain(points, probability, 1.0, 0.5, 0.0, ground_ids=[1, 2, 3], terrain=3)
    inside = (distance > 11.5) & (azimuth > 8) & (azimuth < 22) & ~wall  # cells wholly in the rough patch
    assert np.all(labels[inside] == 3)
    outside = (azimuth > 40) & (azimuth < 350) & ~smooth_terrain
    assert np.all(labels[outside] == 2)
    assert np.all(labels[smooth_terrain] == 1) and np.all(labels[wall] == 4)  # not ground: kept

    beyond_near = texture_terrain(points, probability, 1.0, 0.5, 15.5, ground_ids=[1, 2, 3], terrain=3)
    assert np.all(beyond_near[inside & (distance < 15)] == 2)  # nearer than NEAR: the network's label
    assert np.all(beyond_near[inside & (distance > 16)] == 3)


def test_a_noisy_sensor_keeps_the_networks_labels():
    points = ground_rings(rough_noise=0.01, quiet_noise=0.004)  # ground steps ~0.45 %, above the 0.2 % gate
    probability = np.tile([0.5, 0.1, 0.3, 0.05, 0.05], (len(points), 1))
    assert not quiet_sensor(points, median_ring_step(points))
    assert quiet_sensor(ground_rings(0.01), median_ring_step(ground_rings(0.01)))
    np.testing.assert_array_equal(texture_terrain(points, probability, 1.0, 0.5, 0.0, [1, 2, 3], 3), 2)


def test_the_flood_goes_through_small_steps_only_and_never_across_empty_cells():
    nan = np.nan
    height = np.array(
        [
            [0.00, 0.02, 0.04, 0.20, 0.20],
            [0.00, nan, 0.06, 0.08, 0.20],
            [0.00, nan, nan, nan, nan],
            [0.01, nan, 0.00, 0.00, 0.00],
        ]
    )
    seed = np.zeros(height.shape, bool)
    seed[0, 0] = True
    expected = np.array(  # steps of 0.01-0.02 pass; 0.12-0.16 and the empty row do not
        [[1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]], bool
    )
    np.testing.assert_array_equal(flooded(height, seed, 0.03), expected)
    everything = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(flooded(height, seed, 0.5), everything)  # the empty row still parts them


def test_terrain_flush_with_the_sensors_road_is_repaved_but_not_behind_a_kerb_or_a_gap():
    # classes: 0 unlabeled, 1 road, 2 sidewalk, 3 terrain, 4 building; a flat street 0.2 m x 0.2 m sampled
    x, y = (v.ravel() for v in np.meshgrid(np.arange(-20, 20, 0.2) + 0.1, np.arange(-20, 20, 0.2) + 0.1))
    z = np.full(len(x), -1.73)
    road = np.abs(y) < 5
    flush = (x > 8) & (x < 12) & (y > 5) & (y < 9)  # grass level with the road: a car could drive onto it
    kerbed = (x > -12) & (x < -8) & (y > 5) & (y < 9)  # grass behind a 15 cm kerb
    beyond_gap = (x > 8) & (x < 12) & (y < -7) & (y > -11)  # level grass, but nothing seen between it and the road
    gap = (x > 7) & (x < 13) & (y <= -5) & (y >= -7)
    z[~road & ~flush & ~beyond_gap] += 0.15  # sidewalks and kerbed grass raised
    keep = ~gap
    points = np.c_[x, y, z, np.full(len(x), 0.3)][keep].astype(np.float32)
    road, flush, kerbed, beyond_gap = road[keep], flush[keep], kerbed[keep], beyond_gap[keep]
    probability = np.tile([0.0, 0.1, 0.6, 0.2, 0.1], (len(points), 1))  # sidewalk
    probability[road] = [0.0, 0.7, 0.1, 0.1, 0.1]
    grass = flush | kerbed | beyond_gap
    probability[grass] = [0.0, 0.1, 0.25, 0.6, 0.05]  # terrain, sidewalk the best paved class

    labels = connected_road(points, probability, 0.06, ground_ids=[1, 2, 3], terrain=3, road=1)
    assert np.all(labels[flush] == 2)  # re-decided: its best other ground class
    assert np.all(labels[kerbed] == 3) and np.all(labels[beyond_gap] == 3)
    assert np.all(labels[road] == 1) and np.all(labels[~road & ~grass] == 2)  # only terrain is re-decided

    no_road_near = probability.copy()
    no_road_near[road] = [0.0, 0.1, 0.7, 0.1, 0.1]  # the network sees no road under the sensor: no seed
    assert np.all(connected_road(points, no_road_near, 0.06, [1, 2, 3], 3, 1)[flush] == 3)
