"""Cross streets of the ``kitti`` world: where they cut through the main street's sides, and their ground.

A crossing has an arm on each side of the main street, or on one side only (a T-junction). An arm
leaves the main street at right angles or skewed (real streets meet at all angles: the shared real
scans stand at a Y-junction whose two arms leave at about 45°, and a student that only ever saw
right-angled crossings calls their far sidewalks grass). Everything the street puts beside the main
road (sidewalks, yards, fences, trees, buildings) asks :func:`taken_spans` which stretches of x a
crossing takes at its own distance from the centre line, so that a skewed arm cuts a slanted gap.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from m2s_training.synth.mesh import LabelledMesh, Part

Span = tuple[float, float]
MAX_SKEW = math.radians(50.0)


@dataclass(frozen=True)
class Arm:
    side: float  # -1.0 or 1.0: the side of the main street it leaves on
    skew: float = 0.0  # radians from the perpendicular; positive leans towards +x


STRAIGHT_ACROSS = (Arm(-1.0), Arm(1.0))  # both arms at right angles: one straight cross street


@dataclass(frozen=True)
class Crossing:
    x: float  # where the cross street's centre line meets the main street's
    half_width: float  # of its road
    sidewalk: float  # width of each of its sidewalks
    arms: tuple[Arm, ...] = STRAIGHT_ACROSS

    def arm(self, side: float) -> Arm | None:
        return next((arm for arm in self.arms if arm.side == side), None)

    def hole(self, side: float, near: float, far: float) -> Span | None:
        """The x-span this crossing takes from the band ``near``–``far`` metres out on ``side``."""
        arm = self.arm(side)
        if arm is None:
            return None
        c, h, s = self.x, self.half_width, self.sidewalk
        if arm.skew == 0.0:  # right angles: the same span at every distance (and the same floats as ever)
            return (c - h - s, c + h + s)
        lean, half = math.tan(arm.skew), (h + s) / math.cos(arm.skew)
        a, b = c + near * lean, c + far * lean
        return (min(a, b) - half, max(a, b) + half)


def taken_spans(crossings: list[Crossing], side: float, near: float, far: float) -> list[Span]:
    """What the crossings take from the band ``near``–``far`` m out on ``side``: sorted, disjoint."""
    spans = sorted(span for c in crossings if (span := c.hole(side, max(near, 0.0), far)) is not None)
    merged: list[Span] = []
    for h0, h1 in spans:
        if merged and h0 <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], h1))
        else:
            merged.append((h0, h1))
    return merged


def random_arms(rng: np.random.Generator, skewed: float) -> tuple[Arm, ...]:
    """Both arms (85 % each, at least one), each skewed with probability ``skewed`` by 15–50°."""
    present = [side for side in (-1.0, 1.0) if rng.random() < 0.85] or [float(rng.choice([-1.0, 1.0]))]
    arms = []
    for side in present:
        skew = rng.uniform(math.radians(15.0), MAX_SKEW) * rng.choice([-1.0, 1.0]) if rng.random() < skewed else 0.0
        arms.append(Arm(side, float(skew)))
    return tuple(arms)


def apart(previous: Crossing | None, crossing: Crossing, reach: float) -> Crossing:
    """``crossing`` with its arms straightened where they would run into ``previous``'s within ``reach``
    metres of the main street (two skewed arms leaning together meet; real streets would join there)."""
    if previous is None:
        return crossing
    arms = []
    for arm in crossing.arms:
        other = previous.arm(arm.side)
        if other is not None:
            closing = reach * (math.tan(other.skew) - math.tan(arm.skew))  # how much nearer they get out there
            room = crossing.x - previous.x - 2 * (crossing.half_width + crossing.sidewalk + 10.0)
            if closing > room:
                arm = Arm(arm.side, 0.0)
        arms.append(arm)
    return Crossing(crossing.x, crossing.half_width, crossing.sidewalk, tuple(arms))


def arm_ground(crossing: Crossing, arm: Arm, edge: float, reach: float, kerb: float, piece: float) -> LabelledMesh:
    """The road and both sidewalks of a skewed arm: slabs along its direction, from the main
    street's centre line (road) or its road edge ``edge`` (sidewalks) out to ``reach`` metres,
    in pieces of at most ``piece`` metres (so that a bent street can carry them)."""
    along = np.array([math.sin(arm.skew), arm.side * math.cos(arm.skew)])
    across = np.array([math.cos(arm.skew), -arm.side * math.sin(arm.skew)])
    heading = math.atan2(along[1], along[0])
    length = reach / math.cos(arm.skew)
    h, s = crossing.half_width, crossing.sidewalk
    strips = [("road", 0.0, (-h, h), 0.0)]
    strips += [("sidewalk", edge / math.cos(arm.skew), offsets, kerb) for offsets in ((h, h + s), (-h - s, -h))]
    parts, thickness = [], 0.2
    for semantic, start, (o0, o1), top in strips:
        edges = np.linspace(start, length, max(2, math.ceil((length - start) / piece) + 1))
        for t0, t1 in itertools.pairwise(edges.tolist()):
            centre = np.array([crossing.x, 0.0]) + along * (t0 + t1) / 2 + across * (o0 + o1) / 2
            slab = Part("box", (t1 - t0, o1 - o0, thickness), (0.0, 0.0, top - thickness / 2), semantic)
            parts.append(LabelledMesh.from_parts([slab], 0).placed(np.array([*centre, 0.0]), heading))
    return LabelledMesh.concatenate(parts)


__all__ = ["STRAIGHT_ACROSS", "Arm", "Crossing", "apart", "arm_ground", "random_arms", "taken_spans"]
