"""Level a scan on its own ground: the sensor's tilt against the road, found without labels, undone.

Real sensors stand on cambered, sloping roads and sit on pitching cars: the shared real KITTI scans lie
on ground tilted 1.6–1.8°, which lifts one side of the road 0.6 m at 20 m. Students trained on level
synthetic streets read height above the road as a class cue, so a tilted scan shows them far road
that looks like a raised lawn. Levelling rotates the scan about the sensor so that the ground plane
near it is horizontal; the sensor's height above that plane is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroundFit:
    normal: np.ndarray  # (3,) unit, z > 0
    offset: float  # plane: normal · p + offset = 0
    inliers: int


def fit_ground(
    points: np.ndarray,
    near: float = 3.0,
    far: float = 20.0,
    max_tilt_deg: float = 10.0,
    threshold: float = 0.08,
    iterations: int = 100,
    sample: int = 2000,
    min_share: float = 0.3,
    seed: int = 0,
) -> GroundFit | None:
    """The ground plane near the sensor, or None where no plane carries ``min_share`` of the candidates.

    Candidates: the lower half of the points ``near``–``far`` m away (the ground is the lowest
    surface; walls and cars are not), ``sample`` of them drawn with a fixed ``seed`` (the same scan
    always gives the same plane). RANSAC over ``iterations`` planes through three candidates, normals
    within ``max_tilt_deg`` of vertical, inliers within ``threshold`` m; the best refined by least
    squares on its inliers."""
    rng = np.random.default_rng(seed)
    points = np.asarray(points)
    if len(points) > 8 * sample:  # a few thousand points fix a plane as well as 50,000, in a fraction of the time
        # whole rows, then the columns: gathering from the strided (N, 3) view is ~50x slower
        points = np.take(points, rng.integers(0, len(points), 8 * sample), axis=0)
    xyz = points[:, :3].astype(np.float64)
    squared = xyz[:, 0] * xyz[:, 0] + xyz[:, 1] * xyz[:, 1]
    ring = xyz[(squared >= near * near) & (squared <= far * far)]
    if len(ring) < 50:
        return None
    low = ring[ring[:, 2] <= np.median(ring[:, 2])][:sample]  # already in random order
    a, b, c = (low[rng.integers(0, len(low), iterations)] for _ in range(3))
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, lengths, out=np.zeros_like(normals), where=lengths > 1e-9)
    normals *= np.where(normals[:, 2:3] < 0, -1.0, 1.0)  # upward
    upright = normals[:, 2] >= np.cos(np.radians(max_tilt_deg))
    if not upright.any():
        return None
    normals, a = normals[upright], a[upright]
    # (candidates, planes), written out rather than ``low @ normals.T``: a product this size wakes
    # OpenBLAS's thread pool, whose spinning threads then slow the network that runs next (no BLAS here)
    offsets = np.sum(normals * a, axis=1)
    distances = np.abs(low[:, :1] * normals[:, 0] + low[:, 1:2] * normals[:, 1] + low[:, 2:3] * normals[:, 2] - offsets)
    counts = np.count_nonzero(distances < threshold, axis=0)
    best = int(np.argmax(counts))
    if counts[best] < min_share * len(low):
        return None
    inliers = low[distances[:, best] < threshold]
    # least squares z = p x + q y + r on the inliers: the plane's upward normal is (-p, -q, 1)
    design = np.c_[inliers[:, 0], inliers[:, 1], np.ones(len(inliers))]
    (p, q, r), *_ = np.linalg.lstsq(design, inliers[:, 2], rcond=None)
    normal = np.array([-p, -q, 1.0]) / np.sqrt(p * p + q * q + 1.0)
    if normal[2] < np.cos(np.radians(max_tilt_deg)):
        return None
    return GroundFit(normal, -r * normal[2], len(inliers))


def rotation_to_up(normal: np.ndarray) -> np.ndarray:
    """(3, 3) the smallest rotation taking the unit ``normal`` to +z (Rodrigues)."""
    up = np.array([0.0, 0.0, 1.0])
    axis = np.cross(normal, up)
    sine, cosine = np.linalg.norm(axis), float(normal @ up)
    if sine < 1e-12:
        return np.eye(3)
    k = axis / sine
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + sine * cross + (1.0 - cosine) * cross @ cross


def level(points: np.ndarray, **fit_options) -> np.ndarray:
    """(N, 4) ``points`` rotated about the sensor so that their ground plane is horizontal; the same
    points (a copy) when no ground plane is found. Remission (and any further column, such as the
    surface texture) and point order are kept."""
    return level_on(points, fit_ground(points, **fit_options))


def level_on(points: np.ndarray, fit: GroundFit | None) -> np.ndarray:
    """``points`` rotated about the sensor so that ``fit``'s plane is horizontal (it then lies at
    z = -``fit.offset``); a copy when ``fit`` is None. For a caller that needs the plane too."""
    out = np.array(points, dtype=np.float32, copy=True)  # remission (and texture) as they are
    if fit is None:
        return out
    # column by column, not ``points @ rotation.T``: a matrix product of a whole scan runs on OpenBLAS's
    # thread pool, whose threads keep spinning after it and take the cores from the network that runs
    # next (the plane distances above did so as one product: +55 ms per scan for one network on the
    # 2-core CPU; bench/levelling_cost.py, docs/benchmarks.md "GPU")
    x, y, z = (out[:, i].copy() for i in range(3))  # copies: ``out`` is overwritten column by column
    for i, row in enumerate(rotation_to_up(fit.normal).astype(np.float32)):
        out[:, i] = row[0] * x + row[1] * y + row[2] * z
    return out
