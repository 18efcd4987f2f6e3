"""The street's bend and grade (``m2s_training/synth/road_shape.py``), with hand-computed numbers."""

from __future__ import annotations

import numpy as np

from m2s_perception.labels import load_label_map
from m2s_training.data.semantic_kitti import Sequence
from m2s_training.synth import SequenceSimulator, generate, get_preset
from m2s_training.synth.generator import ego_poses
from m2s_training.synth.road_shape import RoadShape

LABELS = load_label_map()


def _circle() -> RoadShape:
    """Radius 100 m, turning left, climbing 5 %, from s = -50 to 250 m."""
    s = np.arange(-50.0, 250.0, 0.25)
    return RoadShape.from_profiles(s, np.full_like(s, 0.01), np.full_like(s, 0.05))


def test_a_quarter_circle_maps_points_and_poses_by_hand():
    shape = _circle()
    quarter = np.pi * 100.0 / 2  # 157.08 m of arc turn the street by 90°
    # on the centre line: the circle about (0, 100) puts it at (100, 100); 10 m to the left of it is
    # 10 m towards the circle's centre, (90, 100); the road has climbed 0.05 × 157.08 = 7.85 m
    points = np.array([[0.0, 0.0, 0.0], [quarter, 0.0, 0.0], [quarter, 10.0, 1.0], [-20.0, -3.0, 0.0]])
    mapped = shape.apply(points)
    np.testing.assert_allclose(mapped[0], [0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(mapped[1], [100.0, 100.0, 0.05 * quarter], atol=1e-3)
    np.testing.assert_allclose(mapped[2], [90.0, 100.0, 1.0 + 0.05 * quarter], atol=1e-3)
    # 20 m before the start: the circle the other way, angle -0.2 rad
    np.testing.assert_allclose(mapped[3], [103.0 * np.sin(-0.2), 100.0 - 103.0 * np.cos(-0.2), -1.0], atol=1e-3)
    pose = np.eye(4)
    pose[0, 3] = quarter
    turned = shape.apply_poses(pose[None])[0]
    # the car faces +y now, nose up by atan(0.05): its x axis is (0, cos, sin) of 2.862°
    np.testing.assert_allclose(turned[:3, 0], [0.0, np.cos(np.arctan(0.05)), np.sin(np.arctan(0.05))], atol=1e-6)
    np.testing.assert_allclose(turned[:3, 2], [0.0, -np.sin(np.arctan(0.05)), np.cos(np.arctan(0.05))], atol=1e-6)
    np.testing.assert_allclose(turned[:3, 3], [100.0, 100.0, 0.05 * quarter], atol=1e-3)


def test_random_shapes_stay_gentle_and_vary():
    rng = np.random.default_rng(0)
    shapes = [RoadShape.random(rng, (-100.0, 500.0)) for _ in range(20)]
    for shape in shapes:
        radius = np.abs(np.diff(shape.s) / np.diff(shape.heading).clip(-1, 1).__abs__().clip(1e-12))
        assert radius.min() > 119.0  # never sharper than the 120 m bends drawn
        assert np.abs(shape.grade).max() <= 0.06 + 1e-9
    assert sum(np.ptp(s.heading) > 0.1 for s in shapes) >= 5  # some streets turn…
    assert sum(np.ptp(s.height) > 3.0 for s in shapes) >= 5  # …and some climb
    assert sum(np.ptp(s.heading) < 1e-9 for s in shapes) + sum(np.ptp(s.height) < 1e-9 for s in shapes) < 20


def test_bent_kitti_world_keeps_static_poles_still_in_the_world(tmp_path):
    """The poses follow the bend and grade: a pole seen from several scans stays in one place."""
    generate(tmp_path, ["03"], preset="kitti-shaped", scans=30, seed=0)
    sequence = Sequence(tmp_path, "03")
    pole = load_label_map().raw_names
    pole_id = next(raw for raw, name in pole.items() if name == "pole")
    per_instance: dict[int, list[np.ndarray]] = {}
    for index in range(len(sequence)):
        frame = sequence.frame(index)
        world = frame.points[:, :3] @ frame.pose[:3, :3].T + frame.pose[:3, 3]
        poles = frame.semantic == pole_id
        for instance in np.unique(frame.instance[poles]):
            mask = poles & (frame.instance == instance)
            if mask.sum() >= 5:
                per_instance.setdefault(int(instance), []).append(world[mask, :2].mean(axis=0))
    tracked = [np.array(c) for c in per_instance.values() if len(c) >= 10]
    assert tracked, "no pole seen in ten scans"
    for xy in tracked:
        assert np.linalg.norm(xy - xy.mean(axis=0), axis=1).max() < 0.15
    # and they turn and climb with the street: from the first to the last scan the car drove
    # 7 m/s × 2.9 s = 20.3 m of arc, over which the street's heading and height changed by
    shape = SequenceSimulator(get_preset("kitti-shaped"), 30, 0, "03").world.shape
    turn, climb = (np.interp(20.3, shape.s, v) - np.interp(0.0, shape.s, v) for v in (shape.heading, shape.height))
    # plus the ego's own weave in its lane (straight-frame poses, as in ego_poses)
    straight = ego_poses(np.arange(30) / 10.0, 7.0, 1.73)
    weave = np.arctan2(straight[-1, 1, 0], straight[-1, 0, 0]) - np.arctan2(straight[0, 1, 0], straight[0, 0, 0])
    last = sequence.poses[-1]
    assert abs(np.arctan2(last[1, 0], last[0, 0]) - (turn + weave)) < 2e-3
    # the first LiDAR frame is pitched up by the grade there (no ego pitch or roll at t = 0): its
    # x axis is (cos, 0, sin) of atan(grade), so the world climb is sin · dx + cos · dz
    pitch = np.arctan(np.interp(0.0, shape.s, shape.grade))
    assert abs(np.sin(pitch) * last[0, 3] + np.cos(pitch) * last[2, 3] - climb) < 0.02
    assert abs(turn) > 1e-3 or abs(climb) > 0.05  # this street does turn or climb


def test_level_streets_when_the_grade_is_capped_at_zero():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    sloped = RoadShape.random(rng_a, (-100.0, 500.0))
    level = RoadShape.random(rng_b, (-100.0, 500.0), max_grade=0.0)
    np.testing.assert_array_equal(level.heading, sloped.heading)  # the same bends…
    assert np.all(level.height == 0.0) and np.ptp(sloped.height) > 0.5  # …without the hills


def test_the_kitti_preset_keeps_its_streets_straight_and_level():
    assert SequenceSimulator(get_preset("kitti"), 2, 0, "00").world.shape is None
    assert SequenceSimulator(get_preset("kitti-shaped"), 2, 0, "00").world.shape is not None


def test_presets_kitti_is_the_round_2_world_and_textured_adds_porous_fences():
    kitti, textured = get_preset("kitti"), get_preset("kitti-textured")
    assert not kitti.porous_fences and textured.porous_fences and get_preset("kitti-shaped").porous_fences
    assert kitti.sensor.range_noise == 0.025 and textured.sensor.range_noise == 0.005
    # the same street, fences aside: both draw the same road, so their first scans share the road's points
    a, b = (SequenceSimulator(p, 1, 0, "00") for p in (kitti, textured))
    road = [np.sum(LABELS.to_train(s.scan(0).semantic) == LABELS.class_names.index("road")) for s in (a, b)]
    assert abs(road[0] - road[1]) < 0.1 * road[0]
