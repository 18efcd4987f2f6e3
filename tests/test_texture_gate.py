"""The surface texture given only near the ground, and only from a quiet sensor (m2s_perception/texture.py,
``texture_ground_band`` / ``texture_quiet_bound``): hand-made scans whose range steps are known."""

from __future__ import annotations

import numpy as np
import pytest
from test_dataset import write_sequence
from test_texture import ring

from m2s_perception.inference import network_input
from m2s_perception.models import ModelConfig
from m2s_perception.texture import with_texture
from m2s_training.data.dataset import SemanticKittiDataset
from m2s_training.data.semantic_kitti import write_scan

MOUNT = 1.73  # the sensor above a flat ground, m
ROUGH, FLOOR = 0.003, 0.0015  # the ramp: steps of 0.15 % read 0, of 0.3 % read 1
AZIMUTH_STEP = np.radians(0.18)  # test_texture.ring's default step
POINTS_PER_RING = 400  # a 72° sector


def alternating(base: float, epsilon: float, count: int = POINTS_PER_RING) -> np.ndarray:
    """Ranges base·(1 ± epsilon) in turn: every step is 2ε / (1 - ε) of the nearer range."""
    return base * (1.0 + epsilon * (-1.0) ** np.arange(count))


def scan(ground_epsilon: float, with_ground: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground rings 5-15 m away (their first 40 returns a rough patch, ε 0.0016: steps of 0.32 %) and one
    rough wall ring 1.9 m above the ground (ε 0.005: 1 %). Returns the points and masks of the patch's inside
    (its first 38 returns: all four steps around each are the patch's; returns 38-40 mix both surfaces)
    and of the wall."""
    parts, patch, wall = [], [], []
    if with_ground:
        for elevation in (-19.0, -15.0, -12.0, -10.0, -8.5, -7.5):
            base = MOUNT / np.sin(np.radians(-elevation))
            ranges = alternating(base, ground_epsilon)
            ranges[:40] = alternating(base, 0.0016, 40)
            parts.append(ring(ranges, elevation))
            patch.append(np.arange(POINTS_PER_RING) < 38)
            wall.append(np.zeros(POINTS_PER_RING, bool))
    parts.append(ring(alternating(10.0, 0.005), 1.0))  # z = +0.17 m: 1.9 m above the ground
    patch.append(np.zeros(POINTS_PER_RING, bool))
    wall.append(np.ones(POINTS_PER_RING, bool))
    return np.concatenate(parts), np.concatenate(patch), np.concatenate(wall)


def test_a_quiet_scan_keeps_the_texture_of_its_ground_and_drops_the_rest():
    points, patch, wall = scan(ground_epsilon=0.0005)  # ground steps 0.1 %: below the floor, read 0
    everywhere = with_texture(points, ROUGH, None, FLOOR)[:, 4]
    assert np.all(everywhere[wall] == 1.0) and np.all(everywhere[patch] == 1.0)  # 1 % and 0.32 %: above 0.3 %
    gated = with_texture(points, ROUGH, None, FLOOR, ground_band=0.4, quiet_bound=0.002)
    np.testing.assert_array_equal(gated[:, :4], points)
    texture = gated[:, 4]
    assert np.all(texture[wall] == 0.0)  # 1.9 m above the ground: outside the band
    ground = ~wall
    # the ground keeps exactly its own texture: the patch reads 1, the smooth ground 0 but for the three
    # returns per ring (38, 39, 40) whose four steps mix the patch's with the smooth ground's
    np.testing.assert_array_equal(texture[ground], everywhere[ground])
    assert np.all(texture[patch] == 1.0)
    assert np.count_nonzero(texture[ground & ~patch] > 0) == 6 * 3


def test_a_noisy_sensor_gives_no_texture_at_all():
    # ground steps 2·0.002/0.998 = 0.4 %, above the 0.2 % bound: the sensor is too noisy for the texture to say anything
    points, _, wall = scan(ground_epsilon=0.002)
    assert np.all(with_texture(points, ROUGH, None, FLOOR)[~wall, 4] == 1.0)
    assert np.all(with_texture(points, ROUGH, None, FLOOR, quiet_bound=0.002)[:, 4] == 0.0)
    # a bound above the sensor's steps lets it through; the band alone never closes the gate
    assert np.any(with_texture(points, ROUGH, None, FLOOR, quiet_bound=0.005)[:, 4] > 0)
    banded = with_texture(points, ROUGH, None, FLOOR, ground_band=0.4)[:, 4]
    assert np.all(banded[~wall] == 1.0) and np.all(banded[wall] == 0.0)


def test_no_ground_plane_means_no_texture():
    # a rough vertical wall (the plane x = 10 m, 0-36° azimuth), eight beams high; a single ring would be a
    # level arc, which is a "ground"
    count = 200
    azimuth = AZIMUTH_STEP * np.arange(count)  # as ring() lays them
    roughness = 1 + 0.005 * (-1.0) ** np.arange(count)
    points = np.concatenate(
        [ring(10.0 / (np.cos(azimuth) * np.cos(np.radians(e))) * roughness, e) for e in np.linspace(-5.0, 2.0, 8)]
    )
    assert np.all(with_texture(points, ROUGH, None, FLOOR)[:, 4] == 1.0)  # steps of 0.8-1.2 %
    assert np.all(with_texture(points, ROUGH, None, FLOOR, ground_band=0.4)[:, 4] == 0.0)


def test_the_model_config_the_node_and_the_dataset_give_the_same_gated_texture(tmp_path):
    config = ModelConfig(texture_step=ROUGH, texture_floor=FLOOR, texture_ground_band=0.4, texture_quiet_bound=0.002)
    points, _, _ = scan(ground_epsilon=0.0005)
    expected = with_texture(points, ROUGH, None, FLOOR, 0.4, 0.002)
    np.testing.assert_array_equal(network_input(points, config), expected)
    seq = write_sequence(tmp_path, sizes=(40, len(points)))
    write_scan(seq / "velodyne" / "000001.bin", points)
    dataset = SemanticKittiDataset(
        tmp_path, ["00"], texture_step=ROUGH, texture_floor=FLOOR, texture_ground_band=0.4, texture_quiet_bound=0.002
    )
    np.testing.assert_array_equal(dataset[1].points, expected)
    for bad in ({"texture_ground_band": 0.4}, {"texture_step": ROUGH, "texture_quiet_bound": 0.0}):
        with pytest.raises(ValueError, match="must be null, or positive with texture_step set"):
            ModelConfig(**bad)


def test_a_levelling_segmenter_fits_the_ground_once_and_prepares_as_before(monkeypatch):
    """The gated texture and the levelling need the same plane: Segmenter.prepare fits it once, and gives the
    points the two steps gave when each fitted its own (tilted scan, so the levelling moves every point)."""
    import m2s_perception.inference as inference
    import m2s_perception.texture as texture
    from m2s_perception.levelling import fit_ground, level
    from m2s_perception.models import build_model

    config = ModelConfig(texture_step=ROUGH, texture_floor=FLOOR, texture_ground_band=0.4, texture_quiet_bound=0.002)
    points, _, _ = scan(ground_epsilon=0.0005)
    tilt = np.radians(2.0)  # about the x axis
    y, z = points[:, 1].copy(), points[:, 2].copy()
    points[:, 1], points[:, 2] = np.cos(tilt) * y - np.sin(tilt) * z, np.sin(tilt) * y + np.cos(tilt) * z
    before = level(with_texture(points, ROUGH, None, FLOOR, 0.4, 0.002))  # each step its own fit
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return fit_ground(*args, **kwargs)

    monkeypatch.setattr(inference, "fit_ground", counted)
    monkeypatch.setattr(texture, "fit_ground", counted)
    prepared = inference.Segmenter(build_model(config), config, "cpu").prepare(points)
    assert len(calls) == 1
    np.testing.assert_array_equal(prepared, before)
    assert np.abs(prepared[:, 2] - points[:, 2]).max() > 0.1  # levelled indeed
    assert prepared[:, 4].max() == 1.0  # the gate is open: the rough patch kept its texture
