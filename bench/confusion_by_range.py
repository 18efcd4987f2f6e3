"""Where a student fails on real scans, by distance: per range band, each ground-truth class's share of
the labelled points and what it is predicted as (its row of the confusion matrix, largest first).

Reads the predictions ``m2s-eval`` writes (``OUT/sequences/XX/predictions/*.label``) beside the
scans and labels they were made for, e.g.

    .venv/bin/m2s-eval --checkpoint CKPT --data /work/shared/real/semantickitti --split all --out OUT
    .venv/bin/python -m bench.confusion_by_range --data /work/shared/real/semantickitti --predictions OUT

Bands default to 0–15, 15–30 and 30+ m (horizontal range): the near street, the far side of it, and
what lies beyond, where a 64-beam sensor sees only the lowest few metres of things.
``--predicted CLASS`` reads the matrices the other way: what the points predicted as CLASS really
are, per band (its column), and how much of CLASS was found: a rare class's IoU is held down by
what else is called it as often as by what of it is missed.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from m2s_perception.labels import load_label_map
from m2s_training.data.semantic_kitti import read_labels, read_scan


def confusion_by_band(
    data: Path, predictions: Path, edges: list[float], num_classes: int, to_train
) -> tuple[list[np.ndarray], int]:
    """One (C, C) confusion matrix (rows: truth, columns: prediction) per band; and the scans read."""
    matrices = [np.zeros((num_classes, num_classes), np.int64) for _ in range(len(edges) - 1)]
    scans = 0
    for predicted in sorted(predictions.glob("sequences/*/predictions/*.label")):
        sequence = predicted.parent.parent.name
        points = read_scan(data / "sequences" / sequence / "velodyne" / f"{predicted.stem}.bin")
        truth = to_train(read_labels(data / "sequences" / sequence / "labels" / predicted.name, len(points))[0])
        guess = to_train(read_labels(predicted, len(points))[0])
        distance = np.hypot(points[:, 0], points[:, 1])
        band = np.digitize(distance, edges[1:-1])
        labelled = truth > 0
        for index, matrix in enumerate(matrices):
            keep = labelled & (band == index)
            np.add.at(matrix, (truth[keep], guess[keep]), 1)
        scans += 1
    return matrices, scans


def report(matrices: list[np.ndarray], edges: list[float], names: list[str], rows: int, columns: int) -> str:
    lines = []
    for (low, high), matrix in zip(itertools.pairwise(edges), matrices, strict=True):
        total = matrix.sum()
        high_text = f"{high:g} m" if np.isfinite(high) else "beyond"
        lines.append(f"\n{low:g}–{high_text}: {total:,} labelled points")
        lines.append("| class | share | predicted as |\n|---|---|---|")
        for truth in np.argsort(-matrix.sum(axis=1))[:rows]:
            row = matrix[truth]
            if row.sum() == 0:
                continue
            top = [j for j in np.argsort(-row)[:columns] if row[j] > 0]
            guesses = ", ".join(f"{names[j]} {row[j] / row.sum():.0%}" for j in top)
            lines.append(f"| {names[truth]} | {row.sum() / total:.1%} | {guesses} |")
    return "\n".join(lines)


def column_report(
    matrices: list[np.ndarray], edges: list[float], names: list[str], predicted: int, columns: int
) -> str:
    """What the points predicted as class ``predicted`` are in truth, per band, and the class's totals."""
    total = sum(matrices)
    called, found, present = (
        int(total[:, predicted].sum()),
        int(total[predicted, predicted]),
        int(total[predicted].sum()),
    )
    name = names[predicted]
    lines = [
        f"predicted {name}: {called:,} points, {found:,} of them {name} ({found / max(called, 1):.0%}); "
        f"{name} in the ground truth: {present:,} points, {found / max(present, 1):.0%} found; "
        f"IoU {found / max(called + present - found, 1):.3f}"
    ]
    for (low, high), matrix in zip(itertools.pairwise(edges), matrices, strict=True):
        column = matrix[:, predicted]
        high_text = f"{high:g} m" if np.isfinite(high) else "beyond"
        truths = [i for i in np.argsort(-column, kind="stable")[:columns] if column[i] > 0]
        what = ", ".join(f"{names[i]} {column[i]:,}" for i in truths) or "none"
        lines.append(f"  {low:g}–{high_text}: {column.sum():,} predicted {name}: {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="scans and labels (sequences/XX/velodyne, labels)")
    parser.add_argument("--predictions", type=Path, required=True, help="m2s-eval --out folder")
    parser.add_argument("--edges", type=float, nargs="+", default=[0.0, 15.0, 30.0], help="band starts (m)")
    parser.add_argument("--rows", type=int, default=7, help="classes per band, most points first")
    parser.add_argument("--columns", type=int, default=4, help="predictions per class, most first")
    parser.add_argument("--predicted", metavar="CLASS", help="instead: what the points predicted as CLASS really are")
    args = parser.parse_args(argv)
    label_map = load_label_map()
    edges = [*sorted(args.edges), float("inf")]
    matrices, scans = confusion_by_band(args.data, args.predictions, edges, label_map.num_classes, label_map.to_train)
    if scans == 0:
        parser.error(f"no predictions under {args.predictions}/sequences/*/predictions/")
    names = list(label_map.class_names)
    print(f"{scans} scans")
    if args.predicted is None:
        print(report(matrices, edges, names, args.rows, args.columns))
    elif args.predicted not in names[1:]:
        parser.error(f"--predicted {args.predicted!r}: not a class; one of {', '.join(names[1:])}")
    else:
        print(column_report(matrices, edges, names, names.index(args.predicted), args.columns))


if __name__ == "__main__":
    main()
