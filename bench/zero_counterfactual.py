"""Does a student lean on where the remission-0 returns lie? Score it on labelled scans as they are,
and with the zeros of a class moved or taken away (labels pick the returns; a diagnosis, never an input
the node could have).

- ``as is``;
- ``zeros scattered``: per scan, the class's zeros are moved to as many of its returns drawn at random
  (the returns that were 0 take the remission of other, lit returns of the class): the same number of
  zeros, no longer in runs along rings and patches;
- ``zeros lit``: the class's zeros take the remission of its lit returns, drawn at random: no zeros;
- ``remission N(m, s)``: every return of the class draws its remission from a normal (``--level m s``,
  clipped to [0.01, 1]): no zeros and no texture of its own;
- ``whole scan at c``: every return of the scan, of any class, at one value (``--constant``): no
  remission cue at all.

For each variant: the IoU of the ``--called`` class (default terrain) and how much of the paved ground
(road, sidewalk, parking) ``--near``–``--far`` m away is called it (docs/benchmarks.md "Sim-to-real",
items 25 and 27), e.g.

    .venv/bin/python -m bench.zero_counterfactual --checkpoint m2s_perception/weights/demo_student.pt \\
        --data /work/shared/real/semantickitti --cls road
    .venv/bin/python -m bench.zero_counterfactual --checkpoint m2s_perception/weights/demo_student.pt \\
        --data /work/shared/real/semantickitti --cls road --called road --near 0 --far 200
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from m2s_perception.inference import Segmenter
from m2s_perception.labels import load_label_map
from m2s_training.data.semantic_kitti import labelled_scans

ZERO = 0.005
PAVED = ("road", "sidewalk", "parking")


def scatter_zeros(remission: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``remission`` with the zeros among ``mask`` moved to as many ``mask``ed returns drawn at random;
    the returns left behind take values of the lit ones."""
    out = remission.copy()
    chosen = np.flatnonzero(mask)
    zero = out[chosen] < ZERO
    if not zero.any() or zero.all():
        return out
    lit_values = out[chosen[~zero]]
    out[chosen[zero]] = rng.choice(lit_values, zero.sum())
    out[rng.choice(chosen, zero.sum(), replace=False)] = 0.0
    return out


def light_zeros(remission: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``remission`` with the zeros among ``mask`` replaced by values of its lit returns drawn at random."""
    out = remission.copy()
    chosen = np.flatnonzero(mask)
    zero = out[chosen] < ZERO
    if zero.any() and not zero.all():
        out[chosen[zero]] = rng.choice(out[chosen[~zero]], zero.sum())
    return out


def draw_level(mean: float, spread: float) -> Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]:
    """A change that gives every ``mask``ed return a remission drawn from N(``mean``, ``spread``)."""

    def change(remission: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = remission.copy()
        out[mask] = np.clip(rng.normal(mean, spread, int(mask.sum())), 0.01, 1.0)
        return out

    return change


def paved_called(
    predicted: np.ndarray, train: np.ndarray, distance: np.ndarray, called: int, near: float = 15.0, far: float = 30.0
) -> np.ndarray:
    """(len(PAVED), 2) int64: per paved class, its returns ``near``–``far`` m away and how many of them are
    predicted ``called`` (summed over scans by the callers; item 25's far-road figure and its kin)."""
    labels = load_label_map()
    band = (distance >= near) & (distance < far)
    counts = np.zeros((len(PAVED), 2), np.int64)
    for row, name in enumerate(PAVED):
        chosen = band & (train == labels.class_id(name))
        counts[row] = chosen.sum(), (chosen & (predicted == called)).sum()
    return counts


def score(
    segmenter: Segmenter,
    scans: list[tuple[np.ndarray, np.ndarray]],
    change: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray],
    class_ids: list[int],
    near: float,
    far: float,
    called: str = "terrain",
) -> tuple[float, dict[str, float]]:
    """IoU of ``called`` and, per paved class, the share of its ``near``–``far`` m returns called it."""
    labels = load_label_map()
    target = labels.class_id(called)
    rng = np.random.default_rng(0)
    hit = false = missed = 0
    paved = np.zeros((len(PAVED), 2), np.int64)
    for points, train in scans:
        changed = points.copy()
        changed[:, 3] = change(points[:, 3], np.isin(train, class_ids), rng)
        predicted = segmenter.predict(changed).labels
        labelled = train > 0
        hit += int(((predicted == target) & (train == target)).sum())
        false += int(((predicted == target) & (train != target) & labelled).sum())
        missed += int(((predicted != target) & (train == target)).sum())
        paved += paved_called(predicted, train, np.hypot(points[:, 0], points[:, 1]), target, near, far)
    iou = hit / max(1, hit + false + missed)
    return iou, {name: int(called) / max(1, int(total)) for name, (total, called) in zip(PAVED, paved, strict=True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="labelled scans (ROOT/sequences/XX/...)")
    parser.add_argument("--cls", nargs="+", default=["road"], help="classes whose zeros move (default road)")
    parser.add_argument("--near", type=float, default=15.0)
    parser.add_argument("--far", type=float, default=30.0)
    parser.add_argument("--called", default="terrain", help="the class whose calls are counted (default terrain)")
    parser.add_argument("--level", nargs=2, type=float, default=[0.23, 0.03], metavar=("MEAN", "SPREAD"))
    parser.add_argument("--constant", type=float, default=0.25)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    labels = load_label_map()
    class_ids = [labels.class_id(name) for name in args.cls]
    segmenter = Segmenter.from_checkpoint(args.checkpoint, args.device)
    scans = [(points, labels.to_train(semantic)) for points, semantic in labelled_scans(args.data)]
    variants = {
        "as is": lambda remission, mask, rng: remission,
        "zeros scattered": scatter_zeros,
        "zeros lit": light_zeros,
        f"remission N({args.level[0]:g}, {args.level[1]:g})": draw_level(*args.level),
        f"whole scan at {args.constant:g}": lambda remission, mask, rng: np.full_like(remission, args.constant),
    }
    print(f"{args.checkpoint} on {len(scans)} scans; zeros of {', '.join(args.cls)} changed")
    columns = " | ".join(f"{name} {args.near:.0f}–{args.far:.0f} m called {args.called}" for name in PAVED)
    print(f"| variant | {args.called} IoU | {columns} |")
    print("|---|---|" + "---|" * len(PAVED))
    for name, change in variants.items():
        iou, paved = score(segmenter, scans, change, class_ids, args.near, args.far, args.called)
        print(f"| {name} | {iou:.3f} | {' | '.join(f'{paved[n]:.2f}' for n in PAVED)} |", flush=True)


if __name__ == "__main__":
    main()
