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
what else is called it as often as by what of it is missed. ``--map OUT.png`` (with ``--predicted``)
draws one scan (``--scan``, in the order read) from above: the points wrongly called CLASS in the
colour of what they are, CLASS found in its own colour, CLASS missed in black, the rest grey. Where the
errors lie is often plainer there than in any table (docs/benchmarks.md "Sim-to-real", item 34: the
false terrain along the outer edge of the sidewalks, at the foot of the hedges), e.g.

    .venv/bin/python -m bench.confusion_by_range --data /work/shared/real/semantickitti --predictions OUT \
        --predicted terrain --map terrain_errors.png
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from m2s_perception.labels import load_label_map
from m2s_training.data.semantic_kitti import read_labels, read_scan


def prediction_files(predictions: Path) -> list[Path]:
    """The label files ``m2s-eval --out`` wrote, in a fixed order."""
    return sorted(predictions.glob("sequences/*/predictions/*.label"))


def read_predicted(data: Path, predicted: Path, to_train) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scan a prediction file was made for, its true and its predicted training ids."""
    sequence = data / "sequences" / predicted.parent.parent.name
    points = read_scan(sequence / "velodyne" / f"{predicted.stem}.bin")
    truth = to_train(read_labels(sequence / "labels" / predicted.name, len(points))[0])
    guess = to_train(read_labels(predicted, len(points))[0])
    return points, truth, guess


def confusion_by_band(
    data: Path, predictions: Path, edges: list[float], num_classes: int, to_train
) -> tuple[list[np.ndarray], int]:
    """One (C, C) confusion matrix (rows: truth, columns: prediction) per band; and the scans read."""
    matrices = [np.zeros((num_classes, num_classes), np.int64) for _ in range(len(edges) - 1)]
    scans = 0
    for predicted in prediction_files(predictions):
        points, truth, guess = read_predicted(data, predicted, to_train)
        distance = np.hypot(points[:, 0], points[:, 1])
        band = np.digitize(distance, edges[1:-1])
        labelled = truth > 0
        for index, matrix in enumerate(matrices):
            keep = labelled & (band == index)
            np.add.at(matrix, (truth[keep], guess[keep]), 1)
        scans += 1
    return matrices, scans


def error_masks(truth: np.ndarray, guess: np.ndarray, predicted: int) -> dict[str, np.ndarray]:
    """Per point: ``found`` (class ``predicted``, called it), ``missed`` (``predicted``, called something
    else) and ``false`` (another labelled class called ``predicted``); unlabelled points are in none."""
    labelled = truth > 0
    called = guess == predicted
    return {
        "found": called & (truth == predicted),
        "missed": ~called & (truth == predicted),
        "false": called & labelled & (truth != predicted),
    }


def draw_map(
    points: np.ndarray, truth: np.ndarray, guess: np.ndarray, predicted: int, label_map, out: Path, extent: float
) -> None:
    """One scan from above: the points wrongly called ``predicted`` coloured by what they are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    masks = error_masks(truth, guess, predicted)
    names, colours = list(label_map.class_names), label_map.train_rgb / 255.0
    figure, axes = plt.subplots(figsize=(9, 9))
    axes.scatter(points[:, 0], points[:, 1], s=0.2, color="0.85", rasterized=True)
    false = masks["false"]
    for cls in np.argsort(-np.bincount(truth[false], minlength=len(names))):
        chosen = false & (truth == cls)
        if chosen.any():
            label = f"{names[cls]} called {names[predicted]} ({chosen.sum():,})"
            axes.scatter(points[chosen, 0], points[chosen, 1], s=2, color=colours[cls], label=label, rasterized=True)
    for key, colour in (("found", colours[predicted]), ("missed", (0.0, 0.0, 0.0))):
        chosen = masks[key]
        label = f"{names[predicted]} {key} ({chosen.sum():,})"
        axes.scatter(points[chosen, 0], points[chosen, 1], s=2, color=colour, marker="x", label=label, rasterized=True)
    axes.set_xlim(-extent, extent)
    axes.set_ylim(-extent, extent)
    axes.set_aspect("equal")
    axes.set_xlabel("x (m)")
    axes.set_ylabel("y (m)")
    axes.legend(markerscale=4, fontsize=8, loc="upper right")
    axes.set_title(f"what is called {names[predicted]}, and what it is")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)


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
    parser.add_argument("--map", type=Path, help="with --predicted: draw one scan's errors from above to this PNG")
    parser.add_argument("--scan", type=int, default=0, help="which scan --map draws, in the order read (default 0)")
    parser.add_argument("--extent", type=float, default=35.0, help="--map shows ±extent m (default 35)")
    args = parser.parse_args(argv)
    if args.map and args.predicted is None:
        parser.error("--map draws the errors of one class: give --predicted CLASS too")
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
        if args.map:
            files = prediction_files(args.predictions)
            if not 0 <= args.scan < len(files):
                parser.error(f"--scan {args.scan}: there are {len(files)} scans (0 to {len(files) - 1})")
            predicted_file = files[args.scan]
            points, truth, guess = read_predicted(args.data, predicted_file, label_map.to_train)
            draw_map(points, truth, guess, names.index(args.predicted), label_map, args.map, args.extent)
            print(f"map of {predicted_file.parent.parent.name}/{predicted_file.stem}: {args.map}")


if __name__ == "__main__":
    main()
