"""What ground lies at the foot of hedges, bushes and fences, in real and synthetic scans (a calibration statistic).

The shipped student calls the outer edge of real sidewalks, and the foot of the hedges behind them,
terrain (docs/benchmarks.md "Sim-to-real", item 34). On the shared real scans the paving runs up to
the plants; in the ``kitti`` world every hedge and fence stood 0.3–0.5 m into a lawn. Per data root
(the first read whole, the others every ``--every``-th scan), each scan levelled on its own ground:

- a *foot* return: a vegetation or fence return (``--standing``: other classes, e.g. building) less than
  ``--foot`` m above the lowest ground return of its 1 m cell (where it meets the ground);
- the ground returns (road, sidewalk, parking, other-ground, terrain) ``--near``–``--far`` m from the
  sensor and within ``--reach`` m (horizontally) of a foot return: the share of each class among them.

    .venv/bin/python -m bench.ground_by_plants /work/shared/real/semantickitti runs/synth_patchy --every 16
    .venv/bin/python -m bench.ground_by_plants /work/shared/real/semantickitti runs/synth_paved \\
        --standing building --far 40
"""

from __future__ import annotations

import numpy as np

from bench.compare_roots import roots_parser, scans_by_root
from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.levelling import level

GROUND = ("road", "sidewalk", "parking", "other-ground", "terrain")
STANDING = ("vegetation", "fence")
CELL = 1.0  # m: the cells whose lowest ground return is a foot's ground


def _cell_keys(xy: np.ndarray, size: float) -> np.ndarray:
    cells = np.floor(xy / size).astype(np.int64)
    return cells[:, 0] * 1_000_003 + cells[:, 1]


def foot_mask(points: np.ndarray, ground: np.ndarray, standing: np.ndarray, foot: float) -> np.ndarray:
    """``standing`` returns less than ``foot`` m above the lowest ``ground`` return of their 1 m cell
    (cells with no ground return have no feet)."""
    keys = _cell_keys(points[:, :2], CELL)
    ground_keys, ground_z = keys[ground], points[ground, 2]
    order = np.lexsort((ground_z, ground_keys))  # by cell, lowest first
    cells, first = np.unique(ground_keys[order], return_index=True)
    lowest = ground_z[order][first]
    where = np.searchsorted(cells, keys[standing])
    where = np.minimum(where, len(cells) - 1) if len(cells) else where
    out = np.zeros(len(points), bool)
    if len(cells) == 0:
        return out
    has_ground = cells[where] == keys[standing]
    above = points[standing, 2] - lowest[where]
    out[np.flatnonzero(standing)[has_ground & (above < foot)]] = True
    return out


def near_feet(points: np.ndarray, feet: np.ndarray, candidates: np.ndarray, reach: float) -> np.ndarray:
    """``candidates`` with a foot return within ``reach`` m horizontally (a grid of ``reach`` cells:
    every foot in the 3 x 3 cells around a candidate is checked by distance)."""
    out = np.zeros(len(points), bool)
    if not feet.any() or not candidates.any():
        return out
    foot_xy = points[feet, :2]
    foot_cells = np.floor(foot_xy / reach).astype(np.int64)
    table: dict[tuple[int, int], list[int]] = {}
    for i, (cx, cy) in enumerate(map(tuple, foot_cells)):
        table.setdefault((cx, cy), []).append(i)
    index = np.flatnonzero(candidates)
    cand_cells = np.floor(points[index, :2] / reach).astype(np.int64)
    for row, (cx, cy) in zip(index, map(tuple, cand_cells), strict=True):
        nearby = [i for dx in (-1, 0, 1) for dy in (-1, 0, 1) for i in table.get((cx + dx, cy + dy), ())]
        if nearby and (np.hypot(*(foot_xy[nearby] - points[row, :2]).T) <= reach).any():
            out[row] = True
    return out


def ground_at_feet(
    points: np.ndarray,
    train: np.ndarray,
    labels: LabelMap,
    near: float,
    far: float,
    foot: float,
    reach: float,
    standing_classes: tuple[str, ...] = STANDING,
) -> np.ndarray:
    """Counts per ``GROUND`` class of one levelled scan's ground returns at the feet of ``standing_classes``."""
    ids = {name: labels.class_id(name) for name in GROUND + standing_classes}
    ground = np.isin(train, [ids[n] for n in GROUND])
    standing = np.isin(train, [ids[n] for n in standing_classes])
    distance = np.hypot(points[:, 0], points[:, 1])
    candidates = ground & (distance >= near) & (distance < far)
    close = near_feet(points, foot_mask(points, ground, standing, foot), candidates, reach)
    return np.array([(close & (train == ids[n])).sum() for n in GROUND], np.int64)


def main(argv: list[str] | None = None) -> None:
    parser = roots_parser(__doc__, every=8, band=(3.0, 20.0))
    parser.add_argument("--foot", type=float, default=0.5, help="m above the cell's lowest ground (default 0.5)")
    parser.add_argument("--reach", type=float, default=0.5, help="m from a foot return (default 0.5)")
    parser.add_argument("--standing", default=",".join(STANDING), help="classes whose feet count (default %(default)s)")
    args = parser.parse_args(argv)
    standing = tuple(args.standing.split(","))
    labels = load_label_map()
    band = f"{args.near:.0f}–{args.far:.0f} m"
    print(f"ground returns {band} within {args.reach} m of a foot of {' or '.join(standing)}: class shares")
    for root, labelled in scans_by_root(args.roots, args.every):
        counts, scans = np.zeros(len(GROUND), np.int64), 0
        for points, semantic in labelled:
            train = labels.to_train(semantic)
            counts += ground_at_feet(level(points), train, labels, args.near, args.far, args.foot, args.reach, standing)
            scans += 1
        shares = " ".join(f"{n} {c / max(1, counts.sum()):.2f}" for n, c in zip(GROUND, counts, strict=True))
        print(f"{root} ({scans} scans, {counts.sum() / max(1, scans):.0f} returns per scan): {shares}")


if __name__ == "__main__":
    main()
