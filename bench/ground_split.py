"""One set of networks decides every class; another only shares out the ground among the ground classes.

    .venv/bin/python -m bench.ground_split --data ../shared/real/semantickitti \\
        --decide m2s_perception/weights/demo_student.pt --ground runs/s2r/ptex_s0/final.pt runs/s2r/ptex_s1/final.pt

With p_d the deciding networks' mean class probability and p_g the ground networks' (each network's
input prepared as ``Segmenter.predict`` prepares it: levelled, with the texture column for a texture
student), the split probability is

    p(c) = p_d(c)                                  for c not a ground class,
    p(c) = p_d(ground) * p_g(c) / p_g(ground)      for c in GROUND,

so the deciders say how much of a point is ground and the ground networks which ground it is. Texture
students (``model.texture_step``) tell real far road from grass by its smooth rings but lose traffic
signs and near hedges (docs/benchmarks.md "Sim-to-real", items 15-16); this asks whether they help where
they are good only (items 39-40). Prints, for the deciders, the ground networks and the split: the
present-class mIoU, per-class IoU and how much of the paved ground 15-30 m away is called terrain.
Scored like ``m2s-eval`` (``--split all`` for the real folder; ``val`` for a synthetic data set).
``--out DIR`` writes the split's labels in ``m2s-eval``'s layout, for ``bench/confusion_by_range.py``
(and its ``--map``).
``--nuscenes BIN`` also prints the share of each label on a nuScenes sweep (x y z intensity ring, float32 x 5;
no labels). Evaluation only: never train or select per scan on the real scans.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.ensemble_spread import log_probabilities, networks_of
from bench.sim2real_nuscenes import read_sweep
from bench.zero_counterfactual import PAVED, paved_called
from m2s_perception.inference import labels_from_logits
from m2s_perception.labels import LabelMap, load_label_map
from m2s_training.data.semantic_kitti import Sequence, existing_split, write_prediction
from m2s_training.metrics import SegmentationMetrics, confusion_matrix

GROUND = ("road", "parking", "sidewalk", "other-ground", "terrain")
SHOWN = ("road", "sidewalk", "parking", "building", "vegetation", "car", "terrain", "pole", "traffic-sign", "trunk")


def split_ground(decide: torch.Tensor, ground: torch.Tensor, ground_ids: list[int]) -> torch.Tensor:
    """(N, C) probabilities: ``decide``'s, with its ground mass shared out as ``ground`` shares it."""
    out = decide.clone()
    share = ground[:, ground_ids]
    mass = decide[:, ground_ids].sum(1, keepdim=True)
    out[:, ground_ids] = mass * share / share.sum(1, keepdim=True).clamp_min(1e-12)
    return out


def labels_of(probability: torch.Tensor) -> torch.Tensor:
    """The most probable real class (never 'unlabeled', id 0), by the node's own rule."""
    return labels_from_logits(probability.log())[0]


def mean_probability(checkpoints: list[Path], clouds: list[np.ndarray], rings: list | None = None) -> list:
    """Every network of ``checkpoints`` on every cloud, its probabilities averaged: one (N, C) per cloud."""
    networks = [s for path in checkpoints for s in networks_of(path)]
    rings = rings or [None] * len(clouds)
    return [
        torch.stack([log_probabilities(s, s.prepare(cloud, ring)).exp() for s in networks]).mean(0)
        for cloud, ring in zip(clouds, rings, strict=True)
    ]


def report(name: str, probabilities: list, targets: list, ranges: list, label_map: LabelMap) -> str:
    """Two lines: present-class mIoU and IoU of the SHOWN classes over all scans, and how much of each paved class
    15-30 m away is called terrain (its share and point count)."""
    confusion = torch.zeros(label_map.num_classes, label_map.num_classes, dtype=torch.int64)
    terrain = label_map.class_id("terrain")
    paved = np.zeros((len(PAVED), 2), np.int64)
    for probability, target, distance in zip(probabilities, targets, ranges, strict=True):
        labels = labels_of(probability)
        confusion += confusion_matrix(labels, target, label_map.num_classes)
        paved += paved_called(labels.numpy(), target.numpy(), distance, terrain)
    metrics = SegmentationMetrics.from_confusion(confusion)
    ious = " ".join(f"{c} {metrics.iou[label_map.class_id(c)]:.3f}" for c in SHOWN)
    far = ", ".join(
        f"{c} {called / max(counted, 1):.0%} ({called:,})"
        for c, (counted, called) in zip(PAVED, paved.tolist(), strict=True)
    )
    return f"{name}: present-class mIoU {metrics.present_miou:.4f}; {ious}\n  15-30 m called terrain: {far}"


def nuscenes_shares(path: Path, decide: list[Path], ground: list[Path], ground_ids, label_map: LabelMap) -> None:
    """Print each set's and the split's seven most common labels beyond 2.5 m on a nuScenes sweep."""
    raw = read_sweep(path)
    points = raw[:, :4].copy()
    points[:, 3] /= 255.0  # nuScenes intensity 0-255
    ring = raw[:, 4].astype(np.int64)
    beyond = np.hypot(points[:, 0], points[:, 1]) >= 2.5  # closer: the ego vehicle's own body
    p_decide = mean_probability(decide, [points], [ring])[0]
    p_ground = mean_probability(ground, [points], [ring])[0]
    p_split = split_ground(p_decide, p_ground, ground_ids)
    for name, p in (("decide", p_decide), ("ground", p_ground), ("split", p_split)):
        share = np.bincount(labels_of(p).numpy()[beyond], minlength=label_map.num_classes) / beyond.sum()
        top = " ".join(f"{label_map.class_names[i]} {share[i]:.3f}" for i in np.argsort(-share)[:7])
        print(f"nuScenes {name}: {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="labelled scans in SemanticKITTI layout")
    parser.add_argument("--split", default="all", help="all (every sequence folder) | val | train")
    parser.add_argument("--decide", type=Path, nargs="+", required=True, help="checkpoints that decide every class")
    parser.add_argument("--ground", type=Path, nargs="+", required=True, help="checkpoints that share out the ground")
    parser.add_argument("--out", type=Path, help="write the split's labels here, in m2s-eval's layout")
    parser.add_argument("--nuscenes", type=Path, help="a nuScenes .pcd.bin sweep (no labels): label shares")
    args = parser.parse_args()
    label_map = load_label_map()
    ground_ids = [label_map.class_id(c) for c in GROUND]
    sequences = [Sequence(args.data, s) for s in existing_split(args.data, args.split)]
    frames = [seq.frame(i) for seq in sequences for i in range(len(seq))]
    names = [(seq.name, seq.frame_id(i)) for seq in sequences for i in range(len(seq))]
    if not frames:
        raise SystemExit(f"no scans in {args.data} (split {args.split})")
    clouds = [f.points for f in frames]
    targets = [torch.from_numpy(label_map.to_train(f.semantic)) for f in frames]
    ranges = [np.hypot(c[:, 0], c[:, 1]) for c in clouds]
    p_decide = mean_probability(args.decide, clouds)
    p_ground = mean_probability(args.ground, clouds)
    p_split = [split_ground(d, g, ground_ids) for d, g in zip(p_decide, p_ground, strict=True)]
    print(f"{len(frames)} scans of {args.data} ({args.split})")
    for name, probabilities in (("decide", p_decide), ("ground", p_ground), ("split", p_split)):
        print(report(name, probabilities, targets, ranges, label_map))
    if args.out:
        for (sequence, frame_id), probability in zip(names, p_split, strict=True):
            write_prediction(args.out, sequence, frame_id, labels_of(probability).numpy(), label_map)
    if args.nuscenes:
        nuscenes_shares(args.nuscenes, args.decide, args.ground, ground_ids, label_map)


if __name__ == "__main__":
    main()
