"""A residential street as the real KITTI scans show it (the ``kitti`` preset's world).

Calibrated against the shared real SemanticKITTI scans (``bench/calibrate_real.py``): there, road
(27 % of the points), sidewalk (21 %), vegetation (22 %) and building (15 %) dominate; the road is
narrow (its points lie 5–18 m from the sensor), sidewalks start 4 m away behind a kerb ~0.17 m high,
cars are parked along both kerbs and the grass (terrain) lies behind the sidewalk. ``world.py``'s
street (14 m road, fixed cross-section) looks nothing like that, so this world varies every width:

    road edge · [parking strip] · [grass verge] · kerb + sidewalk · [front yard: uneven grass, hedges,
    trees, fences] · buildings with setbacks and bays

on each side independently, with cross streets (own road and sidewalks; T-junctions and arms
skewed by 15–50° with ``skewed_junctions``: ``crossings.py``) cutting through, one of them near the
start so that short sequences also show an intersection (real frame 0 is one). The lawns, plants,
hedges and fences come from ``street_parts.py``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from m2s_training.synth import objects
from m2s_training.synth.crossings import STRAIGHT_ACROSS, Crossing, apart, arm_ground, random_arms, taken_spans
from m2s_training.synth.mesh import LabelledMesh, Part
from m2s_training.synth.road_shape import RoadShape
from m2s_training.synth.street_parts import STREET_OBJECTS, fence, hedge, heightfield, pieces
from m2s_training.synth.world import EGO_LANE_Y, RowKind, World, _WorldBuilder

if TYPE_CHECKING:
    from m2s_training.synth.presets import Preset

Span = tuple[float, float]


# Paving under a front plot's hedge or fence (Preset.paved_to_boundary), from the sidewalk's edge, m: hedges
# stand 0.5 m in (0.6-1.5 m thick), fences 0.3 m.
PAVED_UNDER_BOUNDARY = 0.8
# A house's paved apron (Preset.building_apron) lies this far above its lawn's mean level, m: the lawn's bumps
# (heightfield, 0.08 m) reach about 0.12 m.
APRON_RISE = 0.12


def _subtract(span: Span, holes: list[Span]) -> list[Span]:
    """``span`` minus the ``holes`` (sorted, disjoint), as a list of pieces."""
    kept, start = [], span[0]
    for h0, h1 in holes:
        if h1 <= start or h0 >= span[1]:
            continue
        if h0 > start:
            kept.append((start, h0))
        start = max(start, h1)
    if start < span[1]:
        kept.append((start, span[1]))
    return kept


def _clear(x: float, half: float, holes: list[Span]) -> bool:
    return all(x + half <= h0 or x - half >= h1 for h0, h1 in holes)


class _KittiStreet:
    def __init__(self, w: _WorldBuilder, duration: float, preset: Preset, in_pieces: bool):
        self.w, self.rng, self.duration = w, w.rng, duration
        self.preset = preset  # its world settings: porous_fences, street_trees, open_plots, … (presets.py)
        self.in_pieces = in_pieces  # ground in pieces of at most 4 m, which a bent street (RoadShape) can carry
        self.crossings: list[Crossing] = []
        self.road_parking = {-1.0: False, 1.0: False}

    def green(self, tree: float, bush: float, gap: float) -> list[RowKind]:
        """Kinds of a row of garden or park plants: trees, bushes and gaps; with ``undergrowth`` about
        a quarter of the plants are low shrubs, with ``lush`` half of the trees keep low crowns."""
        if not self.preset.undergrowth:
            kinds = [RowKind("tree", tree), RowKind("bush", bush), RowKind("gap", gap)]
        else:
            kinds = [RowKind("tree", tree * 0.75), RowKind("bush", bush * 0.75), RowKind("shrub", 0.25)]
            kinds.append(RowKind("gap", gap))
        if self.preset.lush:
            trees = kinds[0].probability / 2
            kinds = [RowKind("tree", trees), *kinds[1:], RowKind("low-tree", trees)]
        return kinds

    def strip(self, semantic: str, x: Span, y: Span, top: float) -> None:
        """A ground strip along x; for a bent street (``RoadShape``) in pieces of at most 4 m, to follow it."""
        for x0, x1 in pieces(x) if self.in_pieces else [x]:
            self.w.ground(semantic, (x0, x1), y, top)

    def holes(self, side: float, near: float, far: float) -> list[Span]:
        """The x-spans the cross streets take between ``near`` and ``far`` metres out on ``side``."""
        return taken_spans(self.crossings, side, near, far)

    def bands(self, side: float, near: float, far: float) -> list[Span]:
        """``near``–``far`` in one piece, or in 10 m bands where a skewed arm cuts a slanted gap."""
        if all(arm.skew == 0.0 for c in self.crossings for arm in c.arms if arm.side == side):
            return [(near, far)]
        edges = np.linspace(near, far, max(2, int(np.ceil((far - near) / 10.0)) + 1))
        return list(itertools.pairwise(edges.tolist()))

    def objects_row(self, kinds, gap, span, y, z, heading, jitter=0.0) -> None:
        """Static objects along x at lateral position ``y``, skipping the cross streets."""
        for x0, x1 in _subtract(span, self.holes(np.sign(y), abs(y) - jitter - 3.0, abs(y) + jitter + 3.0)):
            self.w.x_min, self.w.x_max = x0, x1
            for parts, x in self.w.row(kinds, gap=gap, span=(x0, x1), builders=STREET_OBJECTS):
                h = heading if heading is not None else self.rng.uniform(-np.pi, np.pi)
                self.w.place(parts, (x, y + self.rng.uniform(-jitter, jitter), z), h)

    def build(self, x_range: Span, window: Span) -> None:
        w, rng = self.w, self.rng
        reach = 70.0
        # Cross streets: one near the start (in 60 % of the sequences), then every 60–160 m.
        x = window[0] + rng.uniform(-15.0, 20.0) if rng.random() < 0.6 else window[0] + rng.uniform(30, 90)
        while x < x_range[1]:
            width, walk = rng.uniform(3.0, 5.0), rng.uniform(1.5, 3.5)
            arms = (
                random_arms(rng, self.preset.skewed_junctions) if self.preset.skewed_junctions > 0 else STRAIGHT_ACROSS
            )
            previous = self.crossings[-1] if self.crossings else None
            self.crossings.append(apart(previous, Crossing(x, width, walk, arms), reach))
            x += rng.uniform(60.0, 160.0)
        half = {-1.0: rng.uniform(3.0, 5.5), 1.0: rng.uniform(2.5, 5.5)}
        self.strip("road", x_range, (-half[-1.0], half[1.0]), 0.0)
        for crossing in self.crossings:
            self.cross_street(crossing, half, reach)
        if rng.random() < 0.5:
            centre = self.holes(-1.0, 0.0, 0.1) + self.holes(1.0, 0.0, 0.1)
            for x0, x1 in w.segments(on=(3.0, 3.0), off=(6.0, 6.0), clear=(window[0] - 6.0, window[0])):
                if _clear((x0 + x1) / 2, 1.5, centre):
                    w.ground("lane-marking", (x0, x1), (-0.07, 0.07), 0.01)
        for side in (-1.0, 1.0):
            self.side(side, half[side], x_range)
        self.traffic(half, x_range, window)

    def cross_street(self, crossing: Crossing, half: dict[float, float], reach: float) -> None:
        """A cross street's road and sidewalks, ``reach`` metres out on each side it has an arm."""
        w = self.w
        c, h, s = crossing.x, crossing.half_width, crossing.sidewalk
        if crossing.arms == STRAIGHT_ACROSS:  # straight across, at right angles (the round-2 world's only kind)
            w.ground("road", (c - h, c + h), (-reach, reach), 0.0)
            for side in (-1.0, 1.0):
                for x0, x1 in ((c - h - s, c - h), (c + h, c + h + s)):
                    w.ground("sidewalk", (x0, x1), (side * (half[side] + 0.01), side * reach), self.cross_kerb())
            return
        for arm in crossing.arms:
            kerb = self.cross_kerb()
            if arm.skew == 0.0:
                w.ground("road", (c - h, c + h), (0.0, arm.side * reach), 0.0)
                for x0, x1 in ((c - h - s, c - h), (c + h, c + h + s)):
                    w.ground("sidewalk", (x0, x1), (arm.side * (half[arm.side] + 0.01), arm.side * reach), kerb)
            else:
                piece = 4.0 if self.in_pieces else 2 * reach
                w.static.append(arm_ground(crossing, arm, half[arm.side] + 0.01, reach, kerb, piece))

    def cross_kerb(self) -> float:
        """A cross street's kerb height: 2 cm higher at least than the lowest kerb along the street (within
        ``kerb_height``: a range narrower than 2 cm gives its highest kerb)."""
        low, high = self.preset.kerb_height
        return self.rng.uniform(min(low + 0.02, high), high)

    def side(self, side: float, edge: float, x_range: Span) -> None:
        w, rng = self.w, self.rng
        y = edge  # distance of the next strip from the centre line
        if rng.random() < 0.25:  # a parking strip with parked cars
            width = rng.uniform(2.2, 2.8)
            for x0, x1 in _subtract(x_range, self.holes(side, y, y + width)):
                self.strip("parking", (x0, x1), (side * y, side * (y + width)), 0.005)
            car_y, y = y + width / 2, y + width
        elif y >= 4.3:  # a wide road: cars parked on it, along the kerb, clear of the lanes
            car_y = y - 1.1
            self.road_parking[side] = True
        else:
            car_y = None
        parked = [RowKind("car", 0.7), RowKind("gap", 0.22), RowKind("truck", 0.03), RowKind("other-vehicle", 0.05)]
        heading = 0.0 if side < 0 else np.pi
        if car_y is not None and rng.random() < 0.85:
            self.objects_row(parked, (0.5, rng.uniform(2.0, 12.0)), x_range, side * car_y, 0.0, heading, 0.2)
        kerb = rng.uniform(*self.preset.kerb_height)
        drop = None if self.preset.lawn_drop is None else rng.uniform(*self.preset.lawn_drop)
        if rng.random() < 0.3:  # grass verge with street trees between road and sidewalk
            verge = rng.uniform(1.0, 2.5)
            lawn = kerb - (0.03 if drop is None else drop)
            for x0, x1 in _subtract(x_range, self.holes(side, y, y + verge)):
                w.static.append(heightfield((x0, x1), (side * y, side * (y + verge)), lawn, 0.03, 0.0, rng))
            trees = [RowKind("tree", 0.6), RowKind("bush", 0.1), RowKind("gap", 0.3)]
            self.objects_row(trees, (4.0, 12.0), x_range, side * (y + verge / 2), kerb if drop is None else lawn, 0.0)
            y += verge
        elif self.preset.street_trees > 0 and rng.random() < self.preset.street_trees:
            # trees planted in the sidewalk along the kerb: far down the street their low crowns,
            # not the facades behind them, are what the beams hit
            trees = [RowKind("tree", 0.75), RowKind("gap", 0.25)]
            self.objects_row(trees, (5.0, 10.0), x_range, side * (y + 0.7), kerb, 0.0, 0.1)
        walk = rng.uniform(1.5, 4.5)
        for x0, x1 in _subtract(x_range, self.holes(side, y, y + walk)):
            self.strip("sidewalk", (x0, x1), (side * y, side * (y + walk)), kerb)
        furniture = [RowKind("pole", 0.35), RowKind("traffic-sign", 0.2), RowKind("gap", 0.45)]
        self.objects_row(furniture, (8.0, 30.0), x_range, side * (y + 0.35), kerb, np.pi if side < 0 else 0.0)
        people = [RowKind("person", 0.3), RowKind("bicycle", 0.25), RowKind("motorcycle", 0.05), RowKind("gap", 0.4)]
        self.objects_row(people, (5.0, 40.0), x_range, side * (y + walk * 0.6), kerb, None, walk * 0.3)
        y += walk
        self.front_yard(side, y, kerb, x_range, drop)

    def front_yard(self, side: float, y: float, kerb: float, x_range: Span, drop: float | None = None) -> None:
        """Grass, hedges, fences, trees and the buildings behind them, each piece of the street its own.
        The grass lies ``drop`` below the sidewalk, with all on it (None: 2 cm, and the rest at kerb height)."""
        w, rng = self.w, self.rng
        lawn = kerb - (0.02 if drop is None else drop)
        base = kerb if drop is None else lawn  # what hedges, fences and plants stand on
        x0_all, x1_all = x_range
        cursor = x0_all
        while cursor < x1_all:
            length = rng.uniform(15.0, 60.0)
            span = (cursor, min(cursor + length, x1_all))
            cursor = span[1]
            yard = rng.choice([0.0, rng.uniform(1.5, 5.0), rng.uniform(5.0, 10.0)], p=[0.3, 0.5, 0.2])
            # An open plot (a park, a field, a garden without a house): grass with trees and bushes far
            # back, buildings, if any, behind it. Real scans see 20–40 m of vegetation and terrain
            # through such gaps, where a wall of facades would hide them.
            open_depth = rng.uniform(15.0, 35.0) if yard > 0 and rng.random() < self.preset.open_plots else 0.0
            slope = rng.uniform(-0.02, 0.04)
            # drawn only when asked for, so that worlds without it keep their random stream (and bytes)
            share = self.preset.paved_to_boundary
            paved = yard > 0 and share > 0 and rng.random() < share
            if paved:  # the sidewalk's paving runs on under the boundary's front; the lawn starts behind it
                for x0, x1 in _subtract(span, self.holes(side, y, y + PAVED_UNDER_BOUNDARY)):
                    self.strip("sidewalk", (x0, x1), (side * y, side * (y + PAVED_UNDER_BOUNDARY)), kerb)
            lawn_from = y + PAVED_UNDER_BOUNDARY if paved else y
            self.yard_ground(side, lawn_from, kerb, lawn, span, yard, open_depth, slope)
            grass = (lawn, lawn_from, slope) if yard > 0 else None  # the lawn the plot's houses stand in
            boundary = rng.choice(["hedge", "fence", "none"], p=[0.45, 0.3, 0.25]) if yard > 0 else "none"
            stand = kerb if paved else base  # what the hedge or fence stands on
            for x0, x1 in _subtract(span, self.holes(side, y, y + 2.0)):
                if boundary == "hedge":
                    w.static.append(hedge((x0, x1), side * (y + 0.5), stand, rng, self.preset.hedge_height))
                elif boundary == "fence":
                    if self.preset.porous_fences:
                        w.static.append(fence((x0, x1), side * (y + 0.3), stand, rng))
                    else:  # a closed panel, one box (the round-2 world of the shipped weights)
                        height = rng.uniform(0.8, 2.0)
                        centre = ((x0 + x1) / 2, side * (y + 0.3), stand + height / 2)
                        panel = Part("box", (x1 - x0, 0.06, height), centre, "fence")
                        w.static.append(LabelledMesh.from_parts([panel], 0))
            if yard > 1.5:
                green = self.green(0.45, 0.35, 0.2)
                self.objects_row(green, (1.0, 8.0), span, side * (y + yard * 0.5), base, 0.0, yard * 0.3)
            if open_depth > 0:
                for row in range(int(open_depth // 6)):
                    green = self.green(0.35, 0.35, 0.3)
                    offset = yard + 3.0 + 6.0 * row
                    ground = lawn + slope * offset  # on the heightfield's slope
                    self.objects_row(green, (2.0, 10.0), span, side * (y + offset), ground, 0.0, 2.5)
                    if self.preset.lush and rng.random() < 0.5:  # a hedgerow of shrubs through the plot
                        for x0, x1 in _subtract(span, self.holes(side, y + offset + 2.0, y + offset + 4.0)):
                            start = rng.uniform(x0, x1)
                            row_span = (start, min(x1, start + rng.uniform(5.0, 25.0)))
                            w.static.append(hedge(row_span, side * (y + offset + 3.0), ground, rng, (1.2, 3.0)))
                if rng.random() < 0.5:
                    self.buildings(side, y + yard + open_depth, span, grass)
            else:
                self.buildings(side, y + yard + rng.uniform(0.0, 3.0), span, grass)

    def yard_ground(
        self, side: float, y: float, kerb: float, lawn: float, span: Span, yard: float, depth: float, slope: float
    ):
        """The plot's ground out to ``y + yard + depth + 25`` m (grass from height ``lawn``, rising by
        ``slope``) or 30 m (paving at kerb height), around the cross streets."""
        w, rng = self.w, self.rng
        far = y + yard + depth + 25.0 if yard > 0 else y + 30.0  # grass also shows between and behind the buildings
        bands = self.bands(side, y, far)
        phase = rng.uniform(0, 2 * np.pi, 4) if len(bands) > 1 and yard > 0 else None  # one lawn across the bands
        for near, out in bands:
            for x0, x1 in _subtract(span, self.holes(side, near, out)):
                if yard > 0:
                    top = lawn + slope * (near - y)
                    w.static.append(heightfield((x0, x1), (side * near, side * out), top, 0.08, slope, rng, phase))
                else:
                    paving = "other-ground" if rng.random() < 0.3 else "sidewalk"
                    w.ground(paving, (x0, x1), (side * near, side * out), kerb)

    def buildings(self, side: float, front: float, span: Span, grass: tuple[float, float, float] | None = None) -> None:
        """Houses along x from ``front`` m out. ``grass``: the lawn they stand in, (its height where it
        starts, how far out it starts, its rise per metre), or None on paving; ``Preset.building_apron``
        of those in grass get a paved apron."""
        w, rng = self.w, self.rng
        for x0, x1 in _subtract(span, self.holes(side, front, front + 20.0)):
            cursor = x0 + rng.uniform(0.0, 4.0)
            while cursor < x1 - 4.0:
                width = min(rng.uniform(6.0, 25.0), x1 - cursor)
                depth, height = rng.uniform(8.0, 15.0), rng.uniform(4.0, 18.0)
                setback = rng.uniform(0.0, 2.0)
                centre = (cursor + width / 2, side * (front + setback + depth / 2), height / 2 - 0.3)
                parts = [Part("box", (width, depth, height), centre, "building")]
                if rng.random() < 0.4 and width > 6.0:  # a bay, porch or garage in front of the facade
                    bw, bd, bh = rng.uniform(2.0, width * 0.6), rng.uniform(0.8, 3.0), rng.uniform(2.5, height)
                    bx = cursor + rng.uniform(bw / 2, width - bw / 2)
                    parts.append(
                        Part(
                            "box",
                            (bw, bd, bh),
                            (bx, side * (front + setback - bd / 2 + 0.01), bh / 2 - 0.3),
                            "building",
                        )
                    )
                w.static.append(LabelledMesh.from_parts(parts, 0, rng.uniform(0.7, 1.3)))
                share = self.preset.building_apron  # drawn only when asked for: other worlds keep their bytes
                if grass is not None and share > 0 and rng.random() < share:
                    lawn, lawn_from, rise = grass
                    ground = lawn + rise * (front - lawn_from) + rise * setback  # under the house's front wall
                    self.apron(side, (cursor, cursor + width), front + setback, depth, (ground, rise))
                cursor += width + rng.choice([0.0, rng.uniform(2.0, 10.0), rng.uniform(10.0, 25.0)], p=[0.4, 0.4, 0.2])

    def apron(self, side: float, x: Span, front: float, depth: float, lawn: tuple[float, float]) -> None:
        """A paved path 0.5-1.5 m wide around a house's footprint (``x`` by ``front``-``front + depth`` m out),
        in 2 m bands that follow the lawn's rise, ``APRON_RISE`` above its mean level (its bumps stay under)."""
        out = self.rng.uniform(0.5, 1.5)
        ground, rise = lawn
        near, far = front - out, front + depth + out
        edges = np.linspace(near, far, int(np.ceil((far - near) / 2.0)) + 1)
        for band_near, band_far in itertools.pairwise(edges.tolist()):
            top = ground + rise * ((band_near + band_far) / 2 - front) + APRON_RISE
            for x0, x1 in _subtract((x[0] - out, x[1] + out), self.holes(side, band_near, band_far)):
                self.strip("sidewalk", (x0, x1), (side * band_near, side * band_far), top)

    def traffic(self, half: dict[float, float], x_range: Span, window: Span) -> None:
        """Oncoming vehicles, vehicles ahead in the ego lane (faster, never caught up), walkers, cyclists."""
        w, rng, duration = self.w, self.rng, self.duration
        vehicles = [RowKind("moving-car", 0.75), RowKind("moving-truck", 0.07), RowKind("moving-other-vehicle", 0.06)]
        vehicles += [RowKind("moving-motorcyclist", 0.07), RowKind("moving-bicyclist", 0.05)]
        builders = {
            "moving-car": lambda r: objects.car(r, "moving-car"),
            "moving-truck": lambda r: objects.truck(r, "moving-truck"),
            "moving-other-vehicle": lambda r: objects.other_vehicle(r, "moving-other-vehicle"),
            "moving-motorcyclist": lambda r: objects.motorcyclist(r, "moving-motorcyclist"),
            "moving-bicyclist": lambda r: objects.bicyclist(r, "moving-bicyclist"),
            "moving-person": lambda r: objects.person(r, "moving-person"),
        }
        oncoming = (half[1.0] - 2.2 * self.road_parking[1.0]) / 2
        lanes = [
            (oncoming, np.pi, rng.uniform(6.0, 12.0), x_range[0]),
            (EGO_LANE_Y, 0.0, rng.uniform(9.0, 12.0), window[0] + 15.0),
        ]
        for lane_y, heading, speed, start in lanes:
            span = (start, x_range[1] + speed * duration)
            if heading == np.pi:
                span = (x_range[0], x_range[1] + speed * duration)
            cursor = span[0] + rng.uniform(5.0, 40.0)
            while cursor < span[1]:
                name = vehicles[rng.choice(len(vehicles), p=[k.probability for k in vehicles])].name
                w.place(builders[name](rng), (cursor, lane_y, 0.0), heading, speed)
                cursor += rng.uniform(15.0, 60.0)
        for side in (-1.0, 1.0):
            cursor = x_range[0] + rng.uniform(0.0, 20.0)
            while cursor < x_range[1]:
                direction = 0.0 if rng.random() < 0.5 else np.pi
                y = side * (half[side] + rng.uniform(3.0, 5.0))
                w.place(builders["moving-person"](rng), (cursor, y, 0.12), direction, rng.uniform(0.8, 1.7))
                cursor += rng.uniform(10.0, 50.0)


def build_kitti_world(rng: np.random.Generator, x_range: Span, window: Span, duration: float, preset: Preset) -> World:
    """The street of ``preset``'s world settings laid out along x, then (``shaped_roads``) bent and
    sloped by a random :class:`RoadShape`."""
    w = _WorldBuilder(rng, *x_range, window)
    # Ground strips in 4 m pieces follow a bend; the round-2 world (no bends, closed fences: the
    # shipped weights' data) keeps one box per strip, so that its scans stay byte for byte the same.
    street = _KittiStreet(w, duration, preset, in_pieces=preset.shaped_roads or preset.porous_fences)
    street.build(x_range, window)
    w.x_min, w.x_max = x_range
    straight = w.build()
    if not preset.shaped_roads:
        return straight
    # far enough beyond the street's end for the movers, which keep driving for ``duration``
    shape = RoadShape.random(rng, (x_range[0] - 50.0, x_range[1] + 300.0), preset.max_grade)
    return World(shape.apply_mesh(straight.static), straight.movers, shape)


__all__ = ["build_kitti_world", "fence", "heightfield"]
