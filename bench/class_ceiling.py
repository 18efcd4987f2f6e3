"""How high could a class's IoU go by moving its decision threshold alone? For a model's mean class
probability on labelled scans: the class's IoU as the node labels (argmax), and the best IoU that any
threshold on its margin (log p(class) − log of the most probable other class) gives, chosen with the
labels in hand: an upper bound for every re-weighting, prior correction or calibration of that model's
output for that class (docs/benchmarks.md "Sim-to-real", item 42). If the bound is low, the model does not
rank the class's points above the others, and only a different model can help. E.g.

    .venv/bin/python -m bench.class_ceiling --data ../shared/real/semantickitti \\
        --model shipped m2s_perception/weights/demo_student.pt \\
        --model texture runs/s2r/ptex_s0/final.pt runs/s2r/ptex_s1/final.pt \\
        --split shipped texture

``--split DECIDE GROUND`` also scores item 39's ground split of two of the ``--model`` sources.
Evaluation only: the threshold is an oracle, never a setting to take from the real scans.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.ground_split import GROUND, mean_probability, split_ground
from m2s_perception.labels import load_label_map
from m2s_training.data.semantic_kitti import labelled_scans


def margins(probability: torch.Tensor, class_id: int) -> np.ndarray:
    """(N,) log p(class) − log max p(other real class) of (N, C) probabilities ('unlabeled', id 0, never counts)."""
    real = probability.clone()
    real[:, 0] = 0.0
    others = real.clone()
    others[:, class_id] = 0.0
    return (real[:, class_id].clamp_min(1e-12).log() - others.max(1).values.clamp_min(1e-12).log()).numpy()


def best_threshold_iou(margin: np.ndarray, is_class: np.ndarray) -> tuple[float, float, int]:
    """(IoU, margin, points called the class) of the threshold that maximises the IoU when every point whose
    margin is at or above it is called the class; (0, inf, 0) if the class is absent."""
    if not is_class.any():
        return 0.0, float("inf"), 0
    order = np.argsort(-margin, kind="stable")
    hits = is_class[order]
    true_positive = np.cumsum(hits)
    false_positive = np.cumsum(~hits)
    iou = true_positive / (hits.sum() + false_positive)  # TP / (TP + FP + FN), FN = all − TP
    best = int(np.argmax(iou))
    return float(iou[best]), float(margin[order][best]), best + 1


def argmax_iou(margin: np.ndarray, is_class: np.ndarray) -> float:
    called = margin > 0
    return float((called & is_class).sum() / max(1, (called | is_class).sum()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="labelled scans (ROOT/sequences/XX/...)")
    parser.add_argument("--model", nargs="+", action="append", required=True, metavar=("NAME", "CKPT"))
    parser.add_argument("--split", nargs=2, metavar=("DECIDE", "GROUND"), help="also the ground split of two models")
    parser.add_argument("--cls", default="terrain", help="the class (default terrain)")
    args = parser.parse_args(argv)
    labels = load_label_map()
    class_id = labels.class_id(args.cls)
    scans = [(points, labels.to_train(semantic)) for points, semantic in labelled_scans(args.data)]
    truth = np.concatenate([train for _, train in scans])
    labelled = truth > 0
    is_class = truth[labelled] == class_id
    sources = {name: mean_probability([Path(p) for p in paths], [p for p, _ in scans]) for name, *paths in args.model}
    if args.split:
        decide, ground = (sources[name] for name in args.split)
        ground_ids = [labels.class_id(c) for c in GROUND]
        sources["+".join(args.split) + " split"] = [
            split_ground(d, g, ground_ids) for d, g in zip(decide, ground, strict=True)
        ]
    print(f"{args.cls} on {len(scans)} scans of {args.data}: {is_class.sum()} labelled points")
    print("| model | IoU (argmax) | best IoU of any threshold on the margin | at margin | points called it |")
    print("|---|---|---|---|---|")
    for name, probabilities in sources.items():
        margin = np.concatenate([margins(p, class_id) for p in probabilities])[labelled]
        iou, at, called = best_threshold_iou(margin, is_class)
        print(f"| {name} | {argmax_iou(margin, is_class):.3f} | {iou:.3f} | {at:+.2f} | {called} |")


if __name__ == "__main__":
    main()
