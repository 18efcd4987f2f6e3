"""Streets that turn and climb: a smooth bend and grade applied to a world built along a straight x axis.

The ``kitti`` world is laid out in a straight frame: the street along +x, y to the left, z up. Real
streets curve and run up and down hill, so the sensor sees the road ahead bend away and the far
road rise above or sink below its own plane. :class:`RoadShape` maps the straight frame onto a
centre line of varying curvature and height:

    (x, y, z)  ->  C(x) + y · n(x) + (0, 0, h(x) + z)

with C the centre line (arc length x), n its left normal and h the road's height. Boxes keep
their straight faces (a house stays a house); long ground strips are built in short pieces so
that they follow the curve. The ego poses and the moving objects go through the same map, so the
world stays one rigid scene seen from a car driving along the curve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from m2s_training.synth.mesh import LabelledMesh

STEP = 0.5  # metres between centre-line samples


@dataclass(frozen=True)
class RoadShape:
    s: np.ndarray  # (K,) arc length along the street, metres (= x of the straight frame)
    centre: np.ndarray  # (K, 2) centre line in the world
    heading: np.ndarray  # (K,) radians
    height: np.ndarray  # (K,) metres
    grade: np.ndarray  # (K,) dh/ds

    @staticmethod
    def from_profiles(s: np.ndarray, curvature: np.ndarray, grade: np.ndarray) -> RoadShape:
        """Integrate curvature (1/m) and grade (dh/ds) sampled at ``s`` (even steps) from s = 0,
        where the street starts at the origin heading along +x."""
        ds = float(s[1] - s[0])
        heading = _integral(curvature, ds, s)
        centre = np.stack([_integral(np.cos(heading), ds, s), _integral(np.sin(heading), ds, s)], axis=1)
        return RoadShape(s, centre, heading, _integral(grade, ds, s), grade)

    @staticmethod
    def random(rng: np.random.Generator, span: tuple[float, float], max_grade: float = 0.06) -> RoadShape:
        """Straight stretches and bends (radius 120–500 m, either way), level and sloping stretches
        (grade up to ±``max_grade``), each 40–150 m long, with smooth transitions (curvature and
        grade averaged over 30 m, as a clothoid and a vertical curve would make them)."""
        s = np.arange(span[0], span[1] + STEP, STEP)
        curvature, grade = np.zeros_like(s), np.zeros_like(s)
        slope = lambda rng: _slope(rng) * max_grade / 0.06  # noqa: E731  (same draws for any max_grade)
        for profile, draw in ((curvature, _bend), (grade, slope)):
            cursor = span[0]
            while cursor < span[1]:
                length = rng.uniform(40.0, 150.0)
                profile[(s >= cursor) & (s < cursor + length)] = draw(rng)
                cursor += length
        window = np.ones(int(30.0 / STEP)) / int(30.0 / STEP)
        curvature = np.convolve(curvature, window, mode="same")
        grade = np.convolve(grade, window, mode="same")
        return RoadShape.from_profiles(s, curvature, grade)

    def apply(self, vertices: np.ndarray) -> np.ndarray:
        """Map (V, 3) straight-frame points into the world."""
        x, y, z = vertices[:, 0], vertices[:, 1], vertices[:, 2]
        heading = np.interp(x, self.s, self.heading)
        out = np.empty_like(vertices)
        out[:, 0] = np.interp(x, self.s, self.centre[:, 0]) - y * np.sin(heading)
        out[:, 1] = np.interp(x, self.s, self.centre[:, 1]) + y * np.cos(heading)
        out[:, 2] = z + np.interp(x, self.s, self.height)
        return out

    def apply_mesh(self, mesh: LabelledMesh) -> LabelledMesh:
        """``mesh`` with its vertices mapped into the world."""
        return replace(mesh, vertices=self.apply(mesh.vertices))

    def apply_poses(self, poses: np.ndarray) -> np.ndarray:
        """Map (n, 4, 4) straight-frame poses: turned with the street, pitched with its grade."""
        out = poses.copy()
        out[:, :3, 3] = self.apply(poses[:, :3, 3])
        x = poses[:, 0, 3]
        for i, (heading, grade) in enumerate(
            zip(np.interp(x, self.s, self.heading), np.interp(x, self.s, self.grade), strict=True)
        ):
            out[i, :3, :3] = rotation(roll=0.0, pitch=-np.arctan(grade), yaw=heading) @ poses[i, :3, :3]
        return out


def _bend(rng: np.random.Generator) -> float:
    if rng.random() < 0.5:
        return 0.0
    return float(rng.choice([-1.0, 1.0]) / rng.uniform(120.0, 500.0))


def _slope(rng: np.random.Generator) -> float:
    return 0.0 if rng.random() < 0.4 else float(rng.uniform(-0.06, 0.06))


def _integral(values: np.ndarray, ds: float, s: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid integral of ``values`` over ``s``, zero at s = 0."""
    total = np.concatenate([[0.0], np.cumsum((values[1:] + values[:-1]) / 2 * ds)])
    return total - np.interp(0.0, s, total)


def rotation(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) · Ry(pitch) · Rx(roll); a positive pitch turns +x towards −z."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


__all__ = ["RoadShape", "rotation"]
