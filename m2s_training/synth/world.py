"""A procedural urban street: static scenery merged into one mesh, moving objects kept apart.

World frame: the street runs along +x, y points left, z up, road surface at z = 0. Cross-section
from the centre line outwards on each side (metres)::

    road |y| < 7 · parking strip 7–9.5 · sidewalk 9.5–12.5 · terrain 12.5–18 · buildings beyond

Objects are placed in rows along x by a cursor that draws an object kind, its size and a gap.
Every row first places its "guaranteed" kinds inside ``window`` (the stretch the ego vehicle
drives past), so even a short sequence shows all 19 training classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from m2s_training.synth import objects
from m2s_training.synth.mesh import THING_CLASSES, LabelledMesh, Part
from m2s_training.synth.road_shape import RoadShape

ROAD_HALF_WIDTH = 7.0
PARKING_OUTER = 9.5
SIDEWALK_OUTER = 12.5
TERRAIN_OUTER = 18.0
SIDEWALK_TOP = 0.15
TERRAIN_TOP = 0.12
EGO_LANE_Y = -1.75  # right-hand traffic: the ego drives along +x in the inner right lane

ObjectBuilder = Callable[[np.random.Generator], list[Part]]


@dataclass(frozen=True)
class Mover:
    """An object moving in a straight line at constant speed; its instance id never changes."""

    mesh: LabelledMesh  # in the object's frame
    start: np.ndarray  # (3,) world position at t = 0
    heading: float  # radians, about z
    speed: float  # m/s along the heading

    def position(self, t: float) -> np.ndarray:
        return self.start + self.speed * t * np.array([np.cos(self.heading), np.sin(self.heading), 0.0])

    def mesh_at(self, t: float) -> LabelledMesh:
        return self.mesh.placed(self.position(t), self.heading)


@dataclass(frozen=True)
class World:
    static: LabelledMesh  # everything that never moves, in world coordinates
    movers: tuple[Mover, ...]  # in the straight street frame (``shape`` maps them into the world)
    shape: RoadShape | None = None  # how the street turns and climbs; None: straight and level

    def moving_mesh(self, t: float) -> LabelledMesh | None:
        if not self.movers:
            return None
        mesh = LabelledMesh.concatenate([m.mesh_at(t) for m in self.movers])
        return mesh if self.shape is None else self.shape.apply_mesh(mesh)


@dataclass(frozen=True)
class RowKind:
    name: str  # key of OBJECT_BUILDERS, or "gap"
    probability: float


class _WorldBuilder:
    def __init__(self, rng: np.random.Generator, x_min: float, x_max: float, window: tuple[float, float]):
        self.rng = rng
        self.x_min, self.x_max = x_min, x_max
        self.window = window
        self.static: list[LabelledMesh] = []
        self.movers: list[Mover] = []
        self._next_instance = 1

    def _instance_for(self, semantic: str) -> int:
        if semantic.removeprefix("moving-") not in THING_CLASSES:
            return 0
        self._next_instance += 1
        if self._next_instance >= 1 << 16:
            raise ValueError("more than 65535 object instances; shorten the sequence")
        return self._next_instance - 1

    def ground(self, semantic: str, x: tuple[float, float], y: tuple[float, float], top: float) -> None:
        thickness = 0.2
        size = (x[1] - x[0], abs(y[1] - y[0]), thickness)
        centre = ((x[0] + x[1]) / 2, (y[0] + y[1]) / 2, top - thickness / 2)
        self.static.append(LabelledMesh.from_parts([Part("box", size, centre, semantic)], instance=0))

    def place(self, parts: list[Part], position: tuple[float, float, float], heading: float, speed: float = 0.0):
        """Add an object; each thing class in it (a sign's post and plate) gets its own instance id."""
        scale = self.rng.uniform(0.8, 1.2)
        classes = dict.fromkeys(p.semantic for p in parts)
        mesh = LabelledMesh.concatenate(
            [
                LabelledMesh.from_parts([p for p in parts if p.semantic == c], self._instance_for(c), scale)
                for c in classes
            ]
        )
        if speed == 0.0:
            self.static.append(mesh.placed(np.asarray(position), heading))
        else:
            self.movers.append(Mover(mesh, np.asarray(position, np.float64), heading, speed))

    def row(
        self,
        kinds: list[RowKind],
        gap: tuple[float, float],
        guaranteed: list[str] | None = None,
        first_at: float | None = None,
        span: tuple[float, float] | None = None,
        builders: dict[str, ObjectBuilder] | None = None,
    ) -> list[tuple[list[Part], float]]:
        """Objects along x with random kinds and gaps over ``span`` (default: the whole street).

        The kinds in ``guaranteed`` are popped from the list and placed first, from ``first_at``
        (default: the window start) on; kinds that do not fit stay in the list for a later row.
        """
        x0, x1 = span or (self.x_min, self.x_max)
        first_at = self.window[0] if first_at is None else first_at
        queue = guaranteed if guaranteed is not None else []
        names = [k.name for k in kinds]
        probabilities = np.array([k.probability for k in kinds])
        placed = []
        cursor = x0 + self.rng.uniform(0, gap[1])
        while cursor < x1:
            from_queue = bool(queue) and cursor + gap[1] > first_at
            if from_queue:
                cursor = max(cursor, first_at)
                name = queue.pop(0)
            else:
                name = names[self.rng.choice(len(names), p=probabilities / probabilities.sum())]
            if name == "gap":
                cursor += self.rng.uniform(*gap)
                continue
            parts = (builders or OBJECT_BUILDERS)[name](self.rng)
            length = max(_extent_x(parts), 0.3)
            if cursor + length > x1:
                if from_queue:
                    queue.insert(0, name)
                break
            placed.append((parts, cursor + length / 2))
            cursor += length + self.rng.uniform(*gap)
        return placed

    def segments(
        self, on: tuple[float, float], off: tuple[float, float], clear: tuple[float, float]
    ) -> list[tuple[float, float]]:
        """Alternating on/off stretches along x, with the stretch ``clear`` kept off."""
        spans = []
        cursor = clear[0]
        while cursor > self.x_min:
            length = self.rng.uniform(*on)
            spans.append((cursor - length, cursor))
            cursor -= length + self.rng.uniform(*off)
        cursor = clear[1]
        while cursor < self.x_max:
            length = self.rng.uniform(*on)
            spans.append((cursor, cursor + length))
            cursor += length + self.rng.uniform(*off)
        return sorted(spans)

    def build(self) -> World:
        return World(LabelledMesh.concatenate(self.static), tuple(self.movers))


def _extent_x(parts: list[Part]) -> float:
    return max(p.centre[0] + p.size[0] / 2 for p in parts) - min(p.centre[0] - p.size[0] / 2 for p in parts)


def _moving(builder: Callable[..., list[Part]], name: str) -> ObjectBuilder:
    return lambda rng: builder(rng, f"moving-{name}")


OBJECT_BUILDERS: dict[str, ObjectBuilder] = {
    "car": objects.car,
    "truck": objects.truck,
    "other-vehicle": objects.other_vehicle,
    "bicycle": objects.bicycle,
    "motorcycle": objects.motorcycle,
    "person": objects.person,
    "pole": objects.pole,
    "traffic-sign": objects.traffic_sign,
    "tree": objects.tree,
    "bush": objects.bush,
    "moving-car": _moving(objects.car, "car"),
    "moving-truck": _moving(objects.truck, "truck"),
    "moving-other-vehicle": _moving(objects.other_vehicle, "other-vehicle"),
    "moving-person": _moving(objects.person, "person"),
    "moving-bicyclist": _moving(objects.bicyclist, "bicyclist"),
    "moving-motorcyclist": _moving(objects.motorcyclist, "motorcyclist"),
}


def build_world(
    rng: np.random.Generator, x_range: tuple[float, float], window: tuple[float, float], duration: float
) -> World:
    """A street spanning ``x_range``; movers are spread so that they cross it during ``duration`` s.

    On the near (right) side the guaranteed objects are staged: a kerb stretch without parking at
    the window start holds street furniture and people in plain view; parked vehicles follow.
    """
    w = _WorldBuilder(rng, *x_range, window)
    start = window[0]
    w.ground("road", x_range, (-PARKING_OUTER, PARKING_OUTER), 0.0)
    for lane_y in (-3.5, 0.0, 3.5):
        for x0, x1 in w.segments(on=(3.0, 3.0), off=(6.0, 6.0), clear=(start - 6.0, start)):
            w.ground("lane-marking", (x0, x1), (lane_y - 0.08, lane_y + 0.08), 0.01)
    for side in (-1.0, 1.0):
        near = side < 0
        clear_kerb = (start, start + 18.0) if near else (start + 5.0, start + 10.0)
        parking = w.segments(on=(15.0, 40.0), off=(5.0, 15.0), clear=clear_kerb)
        _ground(w, side, parking)
        _parked_vehicles(w, side, near, parking)
        _street_furniture(w, side, near)
        _greenery(w, side, near)
        _buildings(w, side)
        _traffic(w, side, near, duration)
    return w.build()


def _ground(w: _WorldBuilder, side: float, parking: list[tuple[float, float]]) -> None:
    x = (w.x_min, w.x_max)
    for x0, x1 in parking:
        w.ground("parking", (x0, x1), (side * ROAD_HALF_WIDTH, side * PARKING_OUTER), 0.005)
    w.ground("sidewalk", x, (side * PARKING_OUTER, side * SIDEWALK_OUTER), SIDEWALK_TOP)
    w.ground("terrain", x, (side * SIDEWALK_OUTER, side * TERRAIN_OUTER), TERRAIN_TOP)
    # Paved driveways and squares between sidewalk and buildings.
    clear = (w.window[0] - 20.0, w.window[0] + 2.0)
    for x0, x1 in w.segments(on=(4.0, 10.0), off=(15.0, 40.0), clear=clear):
        w.ground("other-ground", (x0, x1), (side * SIDEWALK_OUTER, side * TERRAIN_OUTER), TERRAIN_TOP + 0.01)


def _parked_vehicles(w: _WorldBuilder, side: float, near: bool, parking: list[tuple[float, float]]) -> None:
    kinds = [RowKind("car", 0.65), RowKind("gap", 0.12), RowKind("truck", 0.07)]
    kinds += [RowKind("other-vehicle", 0.07), RowKind("motorcycle", 0.09)]
    guaranteed = ["motorcycle", "car", "other-vehicle", "truck"] if near else []
    heading = 0.0 if side < 0 else np.pi
    for span in parking:
        first_at = max(span[0], w.window[0])
        for parts, x in w.row(kinds, gap=(0.8, 3.0), guaranteed=guaranteed, first_at=first_at, span=span):
            w.place(parts, (x, side * (ROAD_HALF_WIDTH + 1.2), 0.0), heading)


def _street_furniture(w: _WorldBuilder, side: float, near: bool) -> None:
    start = w.window[0]
    kerb_y = side * (PARKING_OUTER + 0.4)
    poles = [RowKind("pole", 0.6), RowKind("gap", 0.4)]
    for parts, x in w.row(poles, gap=(12.0, 30.0), guaranteed=["pole"] * near, first_at=start + 9.0):
        w.place(parts, (x, kerb_y, SIDEWALK_TOP), 0.0)
    signs = [RowKind("traffic-sign", 0.3), RowKind("gap", 0.7)]
    for parts, x in w.row(signs, gap=(20.0, 40.0), guaranteed=["traffic-sign"] * near, first_at=start + 3.0):
        heading = np.pi if side < 0 else 0.0  # the plate faces oncoming traffic
        w.place(parts, (x, kerb_y + side * 0.3, SIDEWALK_TOP), heading)
    kinds = [RowKind("bicycle", 0.3), RowKind("motorcycle", 0.1), RowKind("person", 0.25), RowKind("gap", 0.35)]
    guaranteed = ["bicycle", "person", "bicycle"] if near else []
    for parts, x in w.row(kinds, gap=(3.0, 10.0), guaranteed=guaranteed, first_at=start + 1.0):
        heading = w.rng.uniform(-np.pi, np.pi)
        w.place(parts, (x, side * (SIDEWALK_OUTER - 0.8), SIDEWALK_TOP), heading)


def _greenery(w: _WorldBuilder, side: float, near: bool) -> None:
    start = w.window[0]
    kinds = [RowKind("tree", 0.5), RowKind("bush", 0.3), RowKind("gap", 0.2)]
    for parts, x in w.row(kinds, gap=(3.0, 10.0), guaranteed=["tree"] if near else [], first_at=start + 5.0):
        w.place(parts, (x, side * 15.0, TERRAIN_TOP), 0.0)
    for x0, x1 in w.segments(on=(5.0, 25.0), off=(5.0, 20.0), clear=(start - 5.0, start)):
        if x0 == start or w.rng.random() < 0.5:
            height = w.rng.uniform(1.0, 2.0)
            centre = ((x0 + x1) / 2, side * (TERRAIN_OUTER - 0.5), TERRAIN_TOP + height / 2)
            w.static.append(LabelledMesh.from_parts([Part("box", (x1 - x0, 0.05, height), centre, "fence")], 0))
        else:
            height = w.rng.uniform(0.8, 1.5)
            centre = ((x0 + x1) / 2, side * (TERRAIN_OUTER - 0.8), TERRAIN_TOP + height / 2)
            w.static.append(LabelledMesh.from_parts([Part("box", (x1 - x0, 0.8, height), centre, "vegetation")], 0))


def _buildings(w: _WorldBuilder, side: float) -> None:
    cursor = w.x_min
    while cursor < w.x_max:
        width, depth, height = w.rng.uniform(8, 30), w.rng.uniform(8, 15), w.rng.uniform(5, 22)
        setback = TERRAIN_OUTER + w.rng.uniform(0.0, 3.0)
        centre = (cursor + width / 2, side * (setback + depth / 2), height / 2)
        w.static.append(LabelledMesh.from_parts([Part("box", (width, depth, height), centre, "building")], 0))
        cursor += width + w.rng.uniform(1.0, 8.0)


def _traffic(w: _WorldBuilder, side: float, near: bool, duration: float) -> None:
    """Vehicles in the lanes, cyclists at the road edge, pedestrians on the sidewalk.

    Near-side guaranteed vehicles start ahead of the ego and drive away from it, so they never
    hide the staged kerb; far-side ones come towards it.
    """
    start, end = w.window
    heading = 0.0 if side < 0 else np.pi  # right-hand traffic
    vehicles = [RowKind("moving-car", 0.6), RowKind("moving-truck", 0.08), RowKind("moving-other-vehicle", 0.08)]
    vehicles += [RowKind("moving-motorcyclist", 0.12), RowKind("gap", 0.12)]
    lanes = [side * 5.25] if near else [side * 1.75, side * 5.25]
    for lane_index, lane_y in enumerate(lanes):
        # One speed per lane, so vehicles of a lane never run into each other.
        speed = w.rng.uniform(8.0, 13.0)
        guaranteed = []
        if lane_index == 0:
            guaranteed = ["moving-motorcyclist", "moving-car"] if near else ["moving-truck", "moving-other-vehicle"]
        span = (w.x_min - speed * duration, w.x_max + speed * duration)
        for parts, x in w.row(vehicles, gap=(8.0, 30.0), guaranteed=guaranteed, first_at=end - 12.0, span=span):
            w.place(parts, (x, lane_y, 0.0), heading, speed)
    speed = w.rng.uniform(4.0, 6.5)
    span = (w.x_min - speed * duration, w.x_max + speed * duration)
    cyclists = [RowKind("moving-bicyclist", 1.0)]
    guaranteed = ["moving-bicyclist"] * near
    for parts, x in w.row(cyclists, gap=(25.0, 70.0), guaranteed=guaranteed, first_at=start + 20.0, span=span):
        w.place(parts, (x, side * 6.6, 0.0), heading, speed)
    span = (w.x_min - 2.0 * duration, w.x_max + 2.0 * duration)
    walkers = [RowKind("moving-person", 1.0)]
    guaranteed = ["moving-person"] * near
    for parts, x in w.row(walkers, gap=(8.0, 30.0), guaranteed=guaranteed, first_at=start + 12.0, span=span):
        direction = 0.0 if w.rng.random() < 0.5 else np.pi
        w.place(parts, (x, side * 10.8, SIDEWALK_TOP), direction, w.rng.uniform(1.0, 1.7))
