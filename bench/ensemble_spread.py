"""How much an ensemble's score on real scans depends on which seeds it averages: every k-member
ensemble of each pool of trained students, scored like ``m2s-eval --split all`` (present-class mIoU).

    .venv/bin/python -m bench.ensemble_spread --data ../shared/real/semantickitti --size 4 \\
        --pool shipped-recipe runs/s2r/ship_s{0,1,2,3,10,11,12,13}/final.pt \\
        --pool streets-g15 runs/s2r/str_s1{0,1,2,3}/final.pt runs/s2r/g15f_s{0,1,2,3}/final.pt \\
        --check runs/s2r/ship_x4_r9.pt=runs/s2r/eval_ship_x4_r9 --plot docs/ensemble_spread.png

A pool member may be an ensemble checkpoint: each of its networks joins the pool. Each network runs
once per scan (the node's torch engine, float32 on the CPU); an ensemble's label is the argmax of
its members' mean class probability, as ``m2s_perception/models/ensemble.py`` computes it. Two
recipes compared by one ensemble each differ by the luck of their seeds as well; this prints the
spread of every ensemble of the same size that the pool allows. ``--check CKPT=EVAL_OUT`` first
re-scores a checkpoint this way and stops unless it matches the ``metrics.json`` that ``m2s-eval
--out EVAL_OUT`` wrote for it (on the same machine: figures differ slightly across CPUs).
Scans are levelled on their ground plane first, as ``m2s-eval`` and the node do (``--no-level-ground``:
as they are, as every figure before round 13 of docs/benchmarks.md "Sim-to-real" was measured).
``--cross A B`` also scores every ensemble of ``--size`` / 2 networks of pool A and as many of pool B
(networks trained alike on two synthetic worlds: docs/benchmarks.md "Sim-to-real", item 36), and
``--classes terrain,...`` prints each set's median IoU of those classes as well.
``--views 2|4`` scores test-time augmentation instead: each network's probability is first averaged
over views of the scan (:data:`VIEWS`; 2: identity and the mirrored, half-bin-rotated view) — round 11
of docs/benchmarks.md "Sim-to-real"; the node has no such option.
Evaluation only: never train or select per scan on the real scans.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from m2s_perception.checkpoint import load_model
from m2s_perception.inference import Segmenter, labels_from_logits
from m2s_perception.labels import load_label_map
from m2s_perception.models.ensemble import Ensemble, mean_of_log_probabilities
from m2s_training.data.semantic_kitti import Sequence, existing_split
from m2s_training.metrics import SegmentationMetrics, confusion_matrix

# Views of a scan as (mirror y, rotation about z in degrees): the training augmentations' kinds, and a
# rotation by half of the shipped grid's 2-degree azimuth bin so that each view cuts other cells.
VIEWS = {1: [(False, 0.0)], 2: [(False, 0.0), (True, 1.0)], 4: [(False, 0.0), (True, 0.0), (False, 1.0), (True, 1.0)]}


def viewed(points: np.ndarray, mirror: bool, degrees: float) -> np.ndarray:
    """A copy of (N, 4) ``points`` mirrored (y -> -y) if asked, then rotated by ``degrees`` about z;
    point order and remission kept, so per-point outputs need no inverse."""
    out = points.copy()
    y = -points[:, 1] if mirror else points[:, 1]
    angle = math.radians(degrees)
    out[:, 0] = math.cos(angle) * points[:, 0] - math.sin(angle) * y
    out[:, 1] = math.sin(angle) * points[:, 0] + math.cos(angle) * y
    return out


def networks_of(path: Path, level_ground: bool = True) -> list[Segmenter]:
    """One single-network Segmenter per network in the checkpoint (an ensemble gives several)."""
    model, config, _meta = load_model(path, "cpu")
    if isinstance(model, Ensemble):
        return [Segmenter(member, model.member_config, "cpu", level_ground=level_ground) for member in model.members]
    return [Segmenter(model, config, "cpu", level_ground=level_ground)]


def log_probabilities(segmenter: Segmenter, points: np.ndarray) -> torch.Tensor:
    """(N, C) float32 log-softmax of one network's point logits (``points`` prepared), as the node runs it."""
    return torch.log_softmax(torch.from_numpy(segmenter.point_logits(points)), dim=1)


def ensemble_labels(members: list[torch.Tensor]) -> torch.Tensor:
    """The labels of the mean probability of ``members`` (each (N, C) log-probabilities)."""
    return labels_from_logits(mean_of_log_probabilities(members))[0]


def metrics_of(members: list[list[torch.Tensor]], targets: list[torch.Tensor], num_classes: int) -> SegmentationMetrics:
    """The metrics of the ensemble whose per-scan log-probabilities are ``members[i][scan]``, as m2s-eval's."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for scan, target in enumerate(targets):
        labels = ensemble_labels([member[scan] for member in members])
        confusion += confusion_matrix(labels, target, num_classes)
    return SegmentationMetrics.from_confusion(confusion)


def score(members: list[list[torch.Tensor]], targets: list[torch.Tensor], num_classes: int) -> float:
    """Present-class mIoU of the ensemble whose per-scan log-probabilities are ``members[i][scan]``."""
    return metrics_of(members, targets, num_classes).present_miou


def cross_combinations(first: int, second: int, size: int) -> list[tuple[int, ...]]:
    """Every choice of ``size`` / 2 of ``first`` networks (indices 0..first-1) and as many of ``second``
    (indices first..first+second-1)."""
    if size % 2:
        raise ValueError(f"--cross takes half of each pool: --size must be even, got {size}")
    half = size // 2
    return [
        a + b
        for a in itertools.combinations(range(first), half)
        for b in itertools.combinations(range(first, first + second), half)
    ]


def summary(name: str, metrics: list[SegmentationMetrics], size: int, classes: dict[str, int]) -> str:
    """One line: the median, 10–90 % and range of the ensembles' present-class mIoU (and classes' median IoU)."""
    values = np.array([m.present_miou for m in metrics])
    line = (
        f"{len(values)} ensembles of {size}: median {np.median(values):.4f}, "
        f"10–90 % {np.percentile(values, 10):.4f}–{np.percentile(values, 90):.4f}, "
        f"min–max {values.min():.4f}–{values.max():.4f}"
    )
    per_class = ", ".join(f"{c} {np.median([m.iou[i] for m in metrics]):.4f}" for c, i in classes.items())
    return f"{name}: {line}" + (f"; median IoU {per_class}" if per_class else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="labelled scans in SemanticKITTI layout")
    parser.add_argument("--pool", nargs="+", action="append", required=True, metavar=("NAME", "CKPT"))
    parser.add_argument("--size", type=int, default=4, help="networks per ensemble")
    parser.add_argument(
        "--check", action="append", default=[], metavar="CKPT=EVAL_OUT", help="m2s-eval's --out for CKPT"
    )
    parser.add_argument("--cross", nargs=2, metavar=("POOL_A", "POOL_B"), help="also ensembles of half of each")
    parser.add_argument("--classes", default="", help="comma-separated classes whose median IoU to print too")
    parser.add_argument("--plot", type=Path, help="write a strip plot of every ensemble's score")
    parser.add_argument("--views", type=int, choices=sorted(VIEWS), default=1, help="test-time views per network")
    parser.add_argument(
        "--no-level-ground", dest="level_ground", action="store_false", help="as m2s-eval --no-level-ground"
    )
    args = parser.parse_args()
    label_map = load_label_map()
    sequences = [Sequence(args.data, s) for s in existing_split(args.data, "all")]
    frames = [seq.frame(i) for seq in sequences for i in range(len(seq))]
    targets = [torch.from_numpy(label_map.to_train(f.semantic)) for f in frames]
    n = label_map.num_classes

    def outputs_of(segmenter: Segmenter) -> list[torch.Tensor]:
        """One network's log-probabilities on every scan (averaged over ``--views`` views)."""
        views = VIEWS[args.views]
        clouds = [segmenter.prepare(f.points) for f in frames]  # textured and levelled as predict does
        return [mean_of_log_probabilities([log_probabilities(segmenter, viewed(c, *v)) for v in views]) for c in clouds]

    if args.check and args.views != 1:
        raise SystemExit("--check compares with m2s-eval, which has no views: use it with --views 1")
    for check in args.check:
        path, evaluated = check.split("=", 1)
        metrics = Path(evaluated) / "metrics.json"
        if not metrics.is_file():
            raise SystemExit(f"--check {check}: no {metrics}; run m2s-eval --checkpoint {path} --out {evaluated} first")
        expected = json.loads(metrics.read_text())["present_miou"]
        got = score([outputs_of(s) for s in networks_of(Path(path), args.level_ground)], targets, n)
        print(f"check {path}: {got:.6f}, m2s-eval on this machine: {expected:.6f}")
        if abs(got - expected) > 1e-6:
            raise SystemExit("the re-scored ensemble differs from m2s-eval's: these figures would not be comparable")

    classes = {c: label_map.class_id(c) for c in args.classes.split(",") if c}
    names = [name for name, *_ in args.pool]
    if args.cross and not set(args.cross) <= set(names):
        raise SystemExit(f"--cross {' '.join(args.cross)}: not among the pools {', '.join(names)}")
    results: dict[str, list[float]] = {}
    pools: dict[str, list[list[torch.Tensor]]] = {}
    for name, *paths in args.pool:
        networks = [outputs_of(s) for p in tqdm(paths, desc=name) for s in networks_of(Path(p), args.level_ground)]
        # a pool of --cross gives half of each ensemble, so half as many networks are enough for it
        needed = args.size // 2 if args.cross and name in args.cross else args.size
        if len(networks) < needed:
            raise SystemExit(f"pool {name}: {len(networks)} networks, fewer than the {needed} an ensemble takes")
        pools[name] = networks
        singles = [score([net], targets, n) for net in networks]
        combos = list(itertools.combinations(range(len(networks)), args.size))
        if not combos:  # a --cross pool with fewer than --size networks: only its networks alone
            print(f"{name}: {len(networks)} networks, alone " + " ".join(f"{v:.4f}" for v in singles))
            continue
        metrics = [metrics_of([networks[i] for i in combo], targets, n) for combo in tqdm(combos, desc="ensembles")]
        results[name] = [m.present_miou for m in metrics]
        spread = f" ± {np.std(singles, ddof=1):.4f}" if len(singles) > 1 else ""  # one network has no spread
        alone = f"{np.mean(singles):.4f}{spread} ({min(singles):.4f}–{max(singles):.4f})"
        print(f"{name}: {len(networks)} networks, alone {alone}; " + summary(name, metrics, args.size, classes))
    if args.cross:
        first, second = pools[args.cross[0]], pools[args.cross[1]]
        networks, combos = first + second, cross_combinations(len(first), len(second), args.size)
        metrics = [metrics_of([networks[i] for i in combo], targets, n) for combo in tqdm(combos, desc="cross")]
        name = "+".join(args.cross)
        results[name] = [m.present_miou for m in metrics]
        print(summary(name, metrics, args.size, classes))
    if args.plot:
        plot(results, args.size, args.plot)


def plot(results: dict[str, list[float]], size: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 1.2 + 0.7 * len(results)))
    rng = np.random.default_rng(0)  # vertical jitter only, to see overlapping points
    for row, values in enumerate(results.values()):
        axes.scatter(values, row + rng.uniform(-0.2, 0.2, len(values)), s=8, alpha=0.6)
        axes.plot([np.median(values)] * 2, [row - 0.3, row + 0.3], color="black")
    axes.set_yticks(range(len(results)), list(results))
    axes.set_xlabel(f"present-class mIoU on the real scans, every ensemble of {size} (line: median)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
