"""Per-class remission in one range band, real against synthetic scans (a calibration statistic).

For each class: how many returns lie ``--near``–``--far`` m away (horizontal range), the median and the
interquartile range / median of their non-zero remission, the share of exact zeros, and how patchy the
class is (the interquartile range of its ``--cell`` m squares' mean remission / the median); with several
roots, the first root's median over each other root's (> 1: the other root is darker). Comparing one
band in both matters: the real scans see their grass at 15–40 m, the synthetic streets theirs at
5–20 m, and a median over all returns then mixes range into the material (docs/benchmarks.md
"Sim-to-real", round 17). Labels are read for the statistic only, e.g.

    .venv/bin/python -m bench.remission_by_class /work/shared/real/semantickitti runs/synth_kitti --every 8 \
        [--plot docs/remission_by_class.png]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.compare_roots import roots_parser
from m2s_perception.labels import load_label_map
from m2s_training.atomic import atomic_path
from m2s_training.data.semantic_kitti import labelled_scans


@dataclass(frozen=True)
class Remission:
    count: int  # returns of the class in the band
    median: float  # of the non-zero ones
    spread: float  # their interquartile range / median
    zeros: float  # share of exact zeros
    patchiness: float  # interquartile range of the class's cell means / median (nan: under 5 cells)

    def __str__(self) -> str:
        return (
            f"{self.count:8d} {self.median:.3f} iqr/med {self.spread:.2f} zeros {self.zeros * 100:3.0f}% "
            f"patches {self.patchiness:.2f}"
        )


def band_values(
    points: np.ndarray, labels: np.ndarray, near: float, far: float, cell: float = 2.0, min_returns: int = 10
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per class (``labels``: train ids per point), the remission of its returns ``near``–``far`` m away and
    the mean non-zero remission of each ``cell`` m square holding at least ``min_returns`` non-zero ones of it:
    how bright the class is, and how its brightness varies over metres (patches of asphalt, lawns)."""
    distance = np.hypot(points[:, 0], points[:, 1])
    inside = (distance >= near) & (distance < far)
    found = {}
    for c in np.unique(labels[inside]):
        mine = inside & (labels == c)
        lit = mine & (points[:, 3] > 0)
        _, square, count = np.unique(
            np.floor(points[lit, :2] / cell).astype(np.int64), axis=0, return_inverse=True, return_counts=True
        )
        means = np.bincount(square.ravel(), points[lit, 3], len(count)) / np.maximum(count, 1)
        found[int(c)] = (points[mine, 3], means[count >= min_returns])
    return found


def describe(values: np.ndarray, cell_means: np.ndarray) -> Remission | None:
    """None where too few non-zero returns (< 20) make a median."""
    lit = values[values > 0]
    if len(lit) < 20:
        return None
    q1, q2, q3 = np.percentile(lit, [25, 50, 75])
    patchiness = np.nan
    if len(cell_means) >= 5:
        c1, c3 = np.percentile(cell_means, [25, 75])
        patchiness = float((c3 - c1) / q2)
    return Remission(len(values), float(q2), float((q3 - q1) / q2), float(np.mean(values == 0)), patchiness)


def collect(root: Path, every: int, near: float, far: float, cell: float = 2.0) -> dict[int, Remission | None]:
    labels = load_label_map()
    pooled: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for points, semantic in labelled_scans(root, every):
        for class_id, found in band_values(points, labels.to_train(semantic), near, far, cell).items():
            pooled.setdefault(class_id, []).append(found)
    return {
        class_id: describe(np.concatenate([v for v, _ in parts]), np.concatenate([m for _, m in parts]))
        for class_id, parts in pooled.items()
    }


def plot(path: Path, names: list[str], tables: list[dict[int, Remission | None]], titles: list[str]) -> None:
    """Median and interquartile range of the non-zero remission, one bar per root, for the classes the
    first root (the real scans) has."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in range(1, len(names)) if tables[0].get(c) is not None]
    width = 0.8 / len(tables)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(shown), 3.6))
    for k, (table, title) in enumerate(zip(tables, titles, strict=True)):
        rows = [table.get(c) for c in shown]
        x = np.arange(len(shown)) + (k - (len(tables) - 1) / 2) * width
        median = np.array([r.median if r else np.nan for r in rows])
        half_iqr = np.array([r.spread * r.median / 2 if r else np.nan for r in rows])
        ax.bar(x, median, width, yerr=half_iqr, capsize=2, label=title)
    ax.set_xticks(np.arange(len(shown)), [names[c] for c in shown], rotation=30, ha="right")
    ax.set_ylabel("remission (median, ± IQR / 2)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = roots_parser(__doc__, every=8, band=(5.0, 30.0))
    parser.add_argument("--cell", type=float, default=2.0, help="cell size for the patchiness, m (default 2)")
    parser.add_argument("--plot", type=Path, help="also draw the medians and spreads to this PNG")
    args = parser.parse_args(argv)
    labels = load_label_map()
    # the real scans (a handful) are read whole; --every thins the synthetic sequences
    tables = [
        collect(root, 1 if i == 0 else args.every, args.near, args.far, args.cell) for i, root in enumerate(args.roots)
    ]
    print(
        f"remission {args.near:g}-{args.far:g} m: returns, median / IQR over median of the non-zero ones, zeros, "
        f"patches (IQR of the {args.cell:g} m cells' means over the median)"
    )
    for class_id, name in enumerate(labels.class_names):
        rows = [table.get(class_id) for table in tables]
        if class_id == 0 or all(row is None for row in rows):
            continue
        cells = [
            f"{root.name[:14]:>14s} {str(row) if row else '—':<40}" for root, row in zip(args.roots, rows, strict=True)
        ]
        ratios = [f"{rows[0].median / row.median:.2f}" if rows[0] and row else "—" for row in rows[1:]]
        print(f"{name:14s} " + " ".join(cells) + (" first/other " + " ".join(ratios) if ratios else ""))
    if args.plot:
        titles = [f"{root.name} ({args.near:g}-{args.far:g} m)" for root in args.roots]
        plot(args.plot, list(labels.class_names), tables, titles)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
