"""Does a student lean on where the remission-0 returns lie? Score it on labelled scans as they are,
and with the zeros of a class moved or taken away (labels pick the returns; a diagnosis, never an input
the node could have).

- ``as is``;
- ``zeros scattered``: per scan, the class's zeros are moved to as many of its returns drawn at random
  (the returns that were 0 take the remission of other, lit returns of the class): the same number of
  zeros, no longer in runs along rings and patches;
- ``zeros lit``: the class's zeros take the remission of its lit returns, drawn at random: no zeros.

For each variant: terrain IoU and how much of the paved ground (road, sidewalk, parking) ``--near``–
``--far`` m away is called terrain (docs/benchmarks.md "Sim-to-real", item 25), e.g.

    .venv/bin/python -m bench.zero_counterfactual --checkpoint m2s_perception/weights/demo_student.pt \\
        --data /work/shared/real/semantickitti --cls road
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


def score(
    segmenter: Segmenter,
    scans: list[tuple[np.ndarray, np.ndarray]],
    change: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray],
    class_ids: list[int],
    near: float,
    far: float,
) -> tuple[float, dict[str, float]]:
    """Terrain IoU and, per paved class, the share of its ``near``–``far`` m returns called terrain."""
    labels = load_label_map()
    terrain = labels.class_id("terrain")
    rng = np.random.default_rng(0)
    hit = false = missed = 0
    paved = {name: [0, 0] for name in PAVED}
    for points, train in scans:
        changed = points.copy()
        changed[:, 3] = change(points[:, 3], np.isin(train, class_ids), rng)
        predicted = segmenter.predict(changed).labels
        labelled = train > 0
        hit += int(((predicted == terrain) & (train == terrain)).sum())
        false += int(((predicted == terrain) & (train != terrain) & labelled).sum())
        missed += int(((predicted != terrain) & (train == terrain)).sum())
        distance = np.hypot(points[:, 0], points[:, 1])
        band = (distance >= near) & (distance < far)
        for name, counts in paved.items():
            chosen = band & (train == labels.class_id(name))
            counts[0] += int(chosen.sum())
            counts[1] += int((chosen & (predicted == terrain)).sum())
    iou = hit / max(1, hit + false + missed)
    return iou, {name: called / max(1, total) for name, (total, called) in paved.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="labelled scans (ROOT/sequences/XX/...)")
    parser.add_argument("--cls", nargs="+", default=["road"], help="classes whose zeros move (default road)")
    parser.add_argument("--near", type=float, default=15.0)
    parser.add_argument("--far", type=float, default=30.0)
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
    }
    print(f"{args.checkpoint} on {len(scans)} scans; zeros of {', '.join(args.cls)} changed")
    columns = " | ".join(f"{name} {args.near:.0f}–{args.far:.0f} m called terrain" for name in PAVED)
    print(f"| variant | terrain IoU | {columns} |")
    print("|---|---|" + "---|" * len(PAVED))
    for name, change in variants.items():
        iou, paved = score(segmenter, scans, change, class_ids, args.near, args.far)
        print(f"| {name} | {iou:.3f} | {' | '.join(f'{paved[n]:.2f}' for n in PAVED)} |", flush=True)


if __name__ == "__main__":
    main()
