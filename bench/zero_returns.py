"""Where the returns of remission 0 lie, in real and synthetic scans (a calibration statistic).

A real HDL-64E reports remission exactly 0 for some returns (the next value is 0.01–0.03: a separate
mode, not the tail of dark surfaces). On the shared real scans those zeros lie on road, in whole ring
segments of a few lasers and in dark patches, almost never on sidewalks and never on grass; the
synthetic ``kitti`` materials drew them per point, on every class. A student learns where zeros fall:
the shipped one calls real far road terrain wherever a stretch of it has no 0 among its returns
(docs/benchmarks.md "Sim-to-real", item 25). Per data root (the first read whole, the others every
``--every``-th scan), per class:

- ``zero share`` per range band: the share of the class's returns with remission 0;
- ``cells with a 0``: of the polar cells (0.4 m × 2°, the student's grid) ``--near``–``--far`` m
  away holding ≥ 3 returns of the class, the share holding at least one 0;
- ``0 after 0``: of the zeros, the share whose next return along the same ring (the sensor's order)
  is a 0 of the same class too. Zeros drawn independently give the class's zero share here; zeros in
  runs along a ring (a laser below its floor, a dark patch) give much more;
- ``per ring`` (road): the zero share of each ring's road returns 5–25 m away, p10 / p50 / p90 over
  the rings with ≥ 100 of them: lasers differ.

    .venv/bin/python -m bench.zero_returns /work/shared/real/semantickitti runs/synth_patchy --every 16
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.compare_roots import roots_parser, scans_by_root
from bench.ring_steps import ring_index
from m2s_perception.labels import load_label_map

CLASSES = ("road", "sidewalk", "parking", "terrain", "vegetation")
BANDS = (0.0, 10.0, 20.0, 30.0, 40.0)
CELL_RHO, CELL_PHI_DEG, CELL_MIN = 0.4, 2.0, 3
ZERO = 0.005  # remission is stored in steps of 0.01


@dataclass
class ZeroCounts:
    """Sums over scans for one class."""

    band_returns: np.ndarray = field(default_factory=lambda: np.zeros(len(BANDS) - 1, np.int64))
    band_zeros: np.ndarray = field(default_factory=lambda: np.zeros(len(BANDS) - 1, np.int64))
    cells: int = 0
    cells_with_zero: int = 0
    zeros: int = 0
    zeros_after_zero: int = 0
    ring_shares: list[float] = field(default_factory=list)


def count_zeros(
    points: np.ndarray, mask: np.ndarray, counts: ZeroCounts, near: float, far: float, rings: np.ndarray
) -> None:
    """Add one scan's ``mask``ed returns (one class) to ``counts``. ``points`` are in the sensor's order."""
    distance = np.hypot(points[:, 0], points[:, 1])
    zero = mask & (points[:, 3] < ZERO)
    band = np.digitize(distance, BANDS) - 1
    inside = (band >= 0) & (band < len(BANDS) - 1)
    counts.band_returns += np.bincount(band[mask & inside], minlength=len(BANDS) - 1)
    counts.band_zeros += np.bincount(band[zero & inside], minlength=len(BANDS) - 1)

    in_range = mask & (distance >= near) & (distance < far)
    phi = np.degrees(np.arctan2(points[in_range, 1], points[in_range, 0])) + 180.0
    cell = np.floor(distance[in_range] / CELL_RHO).astype(np.int64) * 1000 + np.floor(phi / CELL_PHI_DEG).astype(
        np.int64
    )
    _, which = np.unique(cell, return_inverse=True)
    returns = np.bincount(which)
    with_zero = np.bincount(which, weights=zero[in_range]) > 0
    counts.cells += int((returns >= CELL_MIN).sum())
    counts.cells_with_zero += int((with_zero & (returns >= CELL_MIN)).sum())

    same_ring_next = np.zeros(len(points), bool)
    same_ring_next[:-1] = (rings[1:] == rings[:-1]) & zero[1:]
    counts.zeros += int(zero[:-1].sum())
    counts.zeros_after_zero += int((zero & same_ring_next).sum())


def ring_zero_shares(points: np.ndarray, mask: np.ndarray, rings: np.ndarray, min_returns: int = 100) -> list[float]:
    """Per ring with ≥ ``min_returns`` of the ``mask``ed returns 5–25 m away: the share of them that are 0."""
    distance = np.hypot(points[:, 0], points[:, 1])
    chosen = mask & (distance >= 5.0) & (distance < 25.0)
    returns = np.bincount(rings[chosen], minlength=rings.max() + 1)
    zeros = np.bincount(rings[chosen & (points[:, 3] < ZERO)], minlength=rings.max() + 1)
    enough = returns >= min_returns
    return list(zeros[enough] / returns[enough])


def describe(name: str, counts: dict[str, ZeroCounts], near: float, far: float) -> str:
    bands = " ".join(f"{BANDS[i]:.0f}–{BANDS[i + 1]:.0f}" for i in range(len(BANDS) - 1))
    header = f"zero share by band ({bands} m) | cells with a 0 ({near:.0f}–{far:.0f} m) | 0 after 0"
    lines = [f"{name}:", f"  {'class':11s} {header}"]
    for cls, c in counts.items():
        shares = " ".join(f"{z / n:.3f}" if n else "  -  " for z, n in zip(c.band_zeros, c.band_returns, strict=True))
        cells = f"{c.cells_with_zero / c.cells:.2f} of {c.cells}" if c.cells else "-"
        runs = f"{c.zeros_after_zero / c.zeros:.2f} of {c.zeros}" if c.zeros else "-"
        lines.append(f"  {cls:11s} {shares} | {cells} | {runs}")
    road = counts.get("road")
    if road is not None and road.ring_shares:
        p10, p50, p90 = np.percentile(road.ring_shares, [10, 50, 90])
        rings = len(road.ring_shares)
        lines.append(f"  road zero share per ring (5–25 m, {rings} rings): p10/50/90 {p10:.2f}/{p50:.2f}/{p90:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = roots_parser(__doc__, every=8, band=(15.0, 30.0))
    args = parser.parse_args(argv)
    labels = load_label_map()
    for root, labelled in scans_by_root(args.roots, args.every):
        counts = {cls: ZeroCounts() for cls in CLASSES}
        for points, semantic in labelled:
            train, rings = labels.to_train(semantic), ring_index(points)
            for cls, c in counts.items():
                mask = train == labels.class_id(cls)
                count_zeros(points, mask, c, args.near, args.far, rings)
                c.ring_shares += ring_zero_shares(points, mask, rings)
        print(describe(str(root), counts, args.near, args.far))


if __name__ == "__main__":
    main()
