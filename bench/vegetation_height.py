"""How tall the vegetation near the sensor stands, in real and synthetic scans (a calibration statistic).

Each scan is levelled on its own ground plane (``m2s_perception.levelling``, as the node does); for every
vegetation return ``--near``–``--far`` m away, the statistic is the highest vegetation return of its
1 m × 1 m cell, above that plane. Labels are read for the statistic only. The shared real KITTI scans'
near vegetation is mostly ~1.1 m hedges; the ``kitti`` world's was ~2 m until ``hedge_height``
(docs/benchmarks.md "Sim-to-real", round 16), e.g.

    .venv/bin/python -m bench.vegetation_height /work/shared/real/semantickitti runs/synth_kitti --every 1
"""

from __future__ import annotations

import numpy as np

from bench.compare_roots import roots_parser, scans_by_root
from m2s_perception.labels import load_label_map
from m2s_perception.levelling import fit_ground, level_on


def cell_tops(points: np.ndarray, vegetation: np.ndarray, near: float, far: float) -> np.ndarray:
    """For each vegetation point ``near``–``far`` m away, its 1 m cell's highest vegetation return above
    the scan's ground plane (empty where no plane is found or no such point exists)."""
    fit = fit_ground(points)
    if fit is None:
        return np.zeros(0)
    levelled = level_on(points, fit)
    height = levelled[:, 2] + fit.offset  # the plane lies at z = -offset once levelled
    distance = np.hypot(levelled[:, 0], levelled[:, 1])
    keep = vegetation & (distance > near) & (distance < far)
    if not keep.any():
        return np.zeros(0)
    _, cell = np.unique(np.floor(levelled[keep, :2]).astype(np.int64), axis=0, return_inverse=True)
    cell = cell.ravel()
    top = np.full(cell.max() + 1, -np.inf)
    np.maximum.at(top, cell, height[keep])
    return top[cell]


def describe(name: str, tops: np.ndarray) -> str:
    if len(tops) == 0:
        return f"{name}: no vegetation in range"
    q10, q50, q90 = np.percentile(tops, [10, 50, 90])
    return (
        f"{name}: {len(tops)} points, cell top q10/50/90 {q10:.2f}/{q50:.2f}/{q90:.2f} m, "
        f"share < 1.5 m {np.mean(tops < 1.5):.2f}, < 1.0 m {np.mean(tops < 1.0):.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = roots_parser(__doc__, every=10, band=(7.0, 15.0), first_whole=False)
    args = parser.parse_args(argv)
    labels = load_label_map()
    vegetation_id = labels.class_id("vegetation")
    for root, labelled in scans_by_root(args.roots, args.every, first_whole=False):
        tops = []
        for points, semantic in labelled:
            tops.append(cell_tops(points, labels.to_train(semantic) == vegetation_id, args.near, args.far))
        print(describe(str(root), np.concatenate(tops) if tops else np.zeros(0)))


if __name__ == "__main__":
    main()
