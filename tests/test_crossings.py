"""Cross streets of the kitti world: the x-spans they take from the main street's sides (numbers by
hand) and, in a generated world, road under a skewed arm's centre line where nothing else stands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from m2s_perception.labels import load_label_map
from m2s_training.synth.crossings import STRAIGHT_ACROSS, Arm, Crossing, apart, random_arms, taken_spans

LABELS = load_label_map()


def test_a_right_angled_crossing_takes_the_same_span_at_every_distance():
    crossing = Crossing(100.0, 4.0, 2.0)  # road 8 m wide, sidewalks 2 m: 100 ± 6
    assert crossing.arms == STRAIGHT_ACROSS
    for side in (-1.0, 1.0):
        assert taken_spans([crossing], side, 3.0, 5.0) == [(94.0, 106.0)]
        assert taken_spans([crossing], side, 30.0, 70.0) == [(94.0, 106.0)]


def test_a_skewed_arm_takes_a_slanted_span_and_a_t_junction_one_side_only():
    # 45°: the centre line is at x = 100 + d at distance d; the 6 m half-width cuts 6 / cos 45° = 8.485 m of x
    crossing = Crossing(100.0, 4.0, 2.0, (Arm(1.0, math.radians(45.0)),))
    h0, h1 = taken_spans([crossing], 1.0, 10.0, 20.0)[0]
    assert h0 == pytest.approx(110.0 - 8.4853, abs=1e-3) and h1 == pytest.approx(120.0 + 8.4853, abs=1e-3)
    leaning_back = Crossing(100.0, 4.0, 2.0, (Arm(1.0, math.radians(-45.0)),))
    h0, h1 = taken_spans([leaning_back], 1.0, 10.0, 20.0)[0]
    assert h0 == pytest.approx(80.0 - 8.4853, abs=1e-3) and h1 == pytest.approx(90.0 + 8.4853, abs=1e-3)
    assert taken_spans([crossing], -1.0, 10.0, 20.0) == []  # no arm on that side


def test_overlapping_spans_merge_and_come_sorted():
    crossings = [Crossing(120.0, 4.0, 2.0), Crossing(100.0, 4.0, 2.0), Crossing(10.0, 3.0, 1.0)]
    assert taken_spans(crossings, 1.0, 0.0, 5.0) == [(6.0, 14.0), (94.0, 106.0), (114.0, 126.0)]
    crossings[0] = Crossing(110.0, 4.0, 2.0)  # 104–116 overlaps 94–106
    assert taken_spans(crossings, 1.0, 0.0, 5.0) == [(6.0, 14.0), (94.0, 116.0)]


def test_random_arms_keep_at_least_one_arm_and_skew_only_when_asked():
    rng = np.random.default_rng(0)
    draws = [random_arms(rng, 0.5) for _ in range(400)]
    assert all(1 <= len(arms) <= 2 for arms in draws)
    assert 0.2 < np.mean([len(arms) == 1 for arms in draws]) < 0.35  # 1 − 0.85² ≈ 0.28
    skews = np.array([abs(arm.skew) for arms in draws for arm in arms])
    assert 0.4 < np.mean(skews > 0) < 0.6
    assert np.all((skews == 0) | ((skews >= math.radians(15.0)) & (skews <= math.radians(50.0))))
    assert all(arm.skew == 0.0 for _ in range(50) for arm in random_arms(rng, 0.0))


def test_a_skewed_arm_is_road_along_its_centre_line_with_sidewalks_beside_it():
    """Rays cast straight down onto a generated kitti world with skewed junctions: along each skewed
    arm's centre line (x = c + d·tan(skew) at distance d) they land on road, 1 m inside its sidewalks
    on sidewalk; nothing of the main street's sides (yards, hedges, buildings) stands in the way."""
    o3d = pytest.importorskip("m2s_training.synth.o3d").open3d
    from m2s_training.synth.presets import get_preset, with_settings
    from m2s_training.synth.sensor import _MeshScene
    from m2s_training.synth.world_kitti import _KittiStreet, _WorldBuilder

    checked = 0
    for seed in range(6):
        w = _WorldBuilder(np.random.default_rng(seed), -90.0, 400.0, (-5.0, 300.0))
        street = _KittiStreet(
            w, 30.0, with_settings(get_preset("kitti"), ["porous_fences=true", "skewed_junctions=1.0"]), in_pieces=True
        )
        street.build((-90.0, 400.0), (-5.0, 300.0))
        scene = _MeshScene(w.build().static)
        for crossing in street.crossings:
            for arm in crossing.arms:
                if arm.skew == 0.0:
                    continue
                d = np.arange(15.0, 60.0, 3.0)
                along = np.array([math.sin(arm.skew), arm.side * math.cos(arm.skew)])
                across = np.array([math.cos(arm.skew), -arm.side * math.sin(arm.skew)])
                centre = np.stack([crossing.x + d * math.tan(arm.skew), arm.side * d], axis=1)
                walk = crossing.half_width + crossing.sidewalk - 1.0  # 1 m inside the outer edge
                for xy, expected in [(centre, "road"), (centre + walk * across, "sidewalk")]:
                    rays = np.zeros((len(xy), 6), np.float32)
                    rays[:, :2], rays[:, 2], rays[:, 5] = xy, 40.0, -1.0
                    _, triangle, _ = scene.cast(o3d.core.Tensor(rays))
                    names = [LABELS.class_names[i] for i in LABELS.to_train(scene.mesh.semantic[triangle])]
                    # trees of the far side's plots may overhang an arm's edge: all but a few rays
                    assert np.mean([n == expected for n in names]) >= 0.9, (
                        seed,
                        arm,
                        expected,
                        [(float(a), n) for a, n in zip(d, names, strict=True) if n != expected],
                    )
                assert np.allclose(np.dot(along, across), 0.0)
                checked += 1
    assert checked >= 3


def test_arms_leaning_into_the_previous_crossings_are_straightened():
    reach = 70.0
    previous = Crossing(0.0, 4.0, 2.0, (Arm(1.0, math.radians(45.0)), Arm(-1.0)))
    # 60 m further on, leaning back 45°: 70 m out the two centre lines would have closed by 140 m
    meeting = Crossing(60.0, 4.0, 2.0, (Arm(1.0, math.radians(-45.0)), Arm(-1.0, math.radians(30.0))))
    kept = apart(previous, meeting, reach)
    assert kept.arm(1.0) == Arm(1.0, 0.0)  # straightened
    assert kept.arm(-1.0) == Arm(-1.0, math.radians(30.0))  # leans away from a straight arm: kept
    parallel = Crossing(60.0, 4.0, 2.0, (Arm(1.0, math.radians(45.0)),))
    assert apart(previous, parallel, reach) == parallel
    assert apart(None, meeting, reach) == meeting
