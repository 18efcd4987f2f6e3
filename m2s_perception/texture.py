"""Surface texture along the scan line: how rough a surface looks to the sensor, per point.

On the real HDL-64E scans grass and pavement lie at nearly one height and reflect alike, but grass is
rougher: the range step between azimuth neighbours of one beam, relative to the range, is 0.25–0.36 %
on terrain against 0.10–0.14 % on road and sidewalk within 30 m (median; ``bench/calibrate_real.py``,
"texture"). A polar network cannot see that by itself: its cells are 0.4 m × 2° and it pools points
with a max, so a few centimetres of range along a ring never reach it. This module measures it.

It needs the points in the order a spinning LiDAR writes them, ring by ring (KITTI ``.bin`` files,
``m2s-synth`` scans, a driver's ring-major cloud): consecutive points are azimuth neighbours of one
beam. Pairs that are not (a new ring, a gap in azimuth, a column-major cloud) are skipped; a point
with no valid pair gets 0, as if smooth.
"""

from __future__ import annotations

import numpy as np

from m2s_perception.levelling import GroundFit, fit_ground

MAX_AZIMUTH_GAP = np.radians(1.0)  # neighbours of one beam lie one azimuth step apart (0.08–0.4°)
MAX_ELEVATION_GAP = np.radians(0.3)  # the HDL-64E's beams lie 0.33–0.5° apart
# How quiet a scan's sensor is: the median step of its ground-plane returns (within GROUND_INLIER m of
# the plane) QUIET_NEAR-QUIET_FAR m away. Real HDL-64E scans 0.12 %, nuScenes' HDL-32E 0.06 %, the
# synthetic sensor with 2.5 cm range noise 0.30 % (docs/benchmarks.md "Sim-to-real", item 40).
GROUND_INLIER = 0.08
QUIET_NEAR, QUIET_FAR = 5.0, 15.0


def ring_texture(
    points: np.ndarray, rough_step: float, ring: np.ndarray | None = None, smooth_step: float = 0.0
) -> np.ndarray:
    """(N,) float32 in [0, 1]: each point's median relative range step m to its ring neighbours, as
    (m - ``smooth_step``) / (``rough_step`` - ``smooth_step``) clipped to [0, 1] (1: as rough as
    ``rough_step`` or rougher; 0: as smooth as ``smooth_step`` or smoother, or no neighbour on its ring).

    The clip matters: above it simulated and real surfaces differ by more than they tell (synthetic
    leaves step 1.3–2.4 % of the range, real ones 0.4–0.6 %), so every rough surface reads alike.
    ``ring``: each point's beam index, where the cloud has one: the points are then taken ring by ring
    (in their order within each ring), which reads column-major clouds too (nuScenes, some drivers).
    """
    return ramp(median_ring_step(points, ring), rough_step, smooth_step)


def ramp(step: np.ndarray, rough_step: float, smooth_step: float = 0.0) -> np.ndarray:
    """``step`` (relative range steps) as 0 at ``smooth_step`` or below, 1 at ``rough_step`` or above."""
    return np.clip((step - np.float32(smooth_step)) / np.float32(rough_step - smooth_step), 0.0, 1.0).astype(np.float32)


def median_ring_step(points: np.ndarray, ring: np.ndarray | None = None) -> np.ndarray:
    """(N,) float32: each point's median relative range step to its (up to four) ring neighbours; 0 for a
    point with no neighbour on its ring. ``ring`` as for :func:`ring_texture`."""
    if ring is not None:
        if len(ring) != len(points):
            raise ValueError(f"ring has {len(ring)} values for {len(points)} points")
        order = np.argsort(ring, kind="stable")
        median = np.empty(len(points), np.float32)
        median[order] = median_ring_step(points[order], None)
        return median
    n = len(points)
    if n < 2:
        return np.zeros(n, np.float32)
    x, y, z = (np.asarray(points[:, i], np.float32) for i in range(3))
    horizontal = np.hypot(x, y)
    distance = np.hypot(horizontal, z)
    azimuth_gap = np.abs(np.diff(np.arctan2(y, x)))
    azimuth_gap = np.minimum(azimuth_gap, 2 * np.pi - azimuth_gap)  # across ±180° too
    elevation_gap = np.abs(np.diff(np.arctan2(z, horizontal)))
    same_ring = (azimuth_gap < MAX_AZIMUTH_GAP) & (elevation_gap < MAX_ELEVATION_GAP)
    nearer = np.maximum(np.minimum(distance[1:], distance[:-1]), np.float32(1e-3))
    step = np.where(same_ring, np.abs(np.diff(distance)) / nearer, np.float32(np.inf))  # step i: points i, i + 1
    # the four steps around point p are steps p - 2 … p + 1; inf (no pair) outside the scan
    padded = np.concatenate([np.full(2, np.inf, np.float32), step, np.full(2, np.inf, np.float32)])
    a, b, c, d = (padded[k : k + n] for k in range(4))
    # a sorting network: a <= b <= c <= d afterwards, the missing steps (inf) last
    a, b = np.minimum(a, b), np.maximum(a, b)
    c, d = np.minimum(c, d), np.maximum(c, d)
    a, c = np.minimum(a, c), np.maximum(a, c)
    b, d = np.minimum(b, d), np.maximum(b, d)
    b, c = np.minimum(b, c), np.maximum(b, c)
    valid = np.isfinite(a).astype(np.int8) + np.isfinite(b) + np.isfinite(c) + np.isfinite(d)
    with np.errstate(invalid="ignore"):  # inf - inf in the branches np.select does not take
        median = np.select([valid == 4, valid == 3, valid == 2, valid == 1], [(b + c) / 2, b, (a + b) / 2, a], 0.0)
    return median.astype(np.float32)


def with_texture(
    points: np.ndarray,
    rough_step: float,
    ring: np.ndarray | None = None,
    smooth_step: float = 0.0,
    ground_band: float | None = None,
    quiet_bound: float | None = None,
    ground: GroundFit | None = None,
) -> np.ndarray:
    """(N, 4) x, y, z, remission → (N, 5) with ``ring_texture`` as the last column.

    ``ground_band`` (m): only points within it of the scan's ground plane (``levelling.fit_ground``)
    keep their texture, the rest get 0, so that signs, trunks and leaves are learned without it
    (students that saw it everywhere lost the real traffic signs: docs/benchmarks.md "Sim-to-real",
    items 15-16). ``quiet_bound``: the scan's sensor must be quiet enough for the texture to mean
    anything: where the median relative step of its own ground 5-15 m away exceeds this, the whole
    column is 0 (a sensor with 2.5 cm range noise makes pavement as rough as grass: items 39-40).
    ``ground``: the scan's plane where the caller has fitted it already (None: fitted here when needed)."""
    step = median_ring_step(points, ring)
    texture = ramp(step, rough_step, smooth_step)
    if ground_band is not None or quiet_bound is not None:
        texture = on_quiet_ground(points, step, texture, ground_band, quiet_bound, ground)
    return np.concatenate([points[:, :4], texture[:, None]], axis=1).astype(np.float32, copy=False)


def on_quiet_ground(
    points: np.ndarray,
    step: np.ndarray,
    texture: np.ndarray,
    ground_band: float | None,
    quiet_bound: float | None,
    ground: GroundFit | None = None,
) -> np.ndarray:
    """``texture`` kept only near the ground plane (``ground_band``) of a scan from a quiet sensor
    (``quiet_bound``); all 0 where no ground plane is found. ``ground``: that plane, if already fitted."""
    fit = ground if ground is not None else fit_ground(points)
    if fit is None:
        return np.zeros_like(texture)
    height = plane_height(points, fit)
    if quiet_bound is not None:
        quiet = quiet_ground_step(points, step, height)
        if quiet is None or quiet > quiet_bound:
            return np.zeros_like(texture)
    if ground_band is not None:
        texture = np.where(np.abs(height) <= ground_band, texture, np.float32(0.0))
    return texture


def plane_height(points: np.ndarray, fit: GroundFit) -> np.ndarray:
    """(N,) float64 signed height of each point above the ground plane ``fit``."""
    x, y, z = (np.asarray(points[:, i], np.float64) for i in range(3))
    # column by column, not a matrix product (levelling.py says why: BLAS threads slow the network after it)
    return fit.normal[0] * x + fit.normal[1] * y + fit.normal[2] * z + fit.offset


def quiet_ground_step(points: np.ndarray, step: np.ndarray, height: np.ndarray) -> float | None:
    """How quiet the scan's sensor is: the median relative ring ``step`` of its ground-plane returns (``height``
    within GROUND_INLIER) QUIET_NEAR–QUIET_FAR m away; None where it has none."""
    distance = np.hypot(np.asarray(points[:, 0], np.float64), np.asarray(points[:, 1], np.float64))
    ground = (np.abs(height) < GROUND_INLIER) & (distance >= QUIET_NEAR) & (distance <= QUIET_FAR) & (step > 0)
    return float(np.median(step[ground])) if ground.any() else None
