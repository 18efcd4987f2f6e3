"""Can a real scan be made to look like the training sensor's before the network sees it? Label-free
changes the node could make to every scan, scored on labelled scans like ``m2s-eval`` (levelled):

- ``noise C``: Gaussian range noise of C cm added along each ray (the synthetic ``kitti`` sensor
  draws 2.5 cm; a real HDL-64E's ranges are quieter, docs/benchmarks.md "Sim-to-real", item 40);
- ``shuffle W``: the remission of the returns within 0.3 m of the scan's ground plane permuted
  within windows of W consecutive ground returns in the sensor's order, so that the real sensor's
  runs of remission-0 returns along rings on far dark road become scattered zeros as in the
  synthetic data (the shipped file calls far road road where its zeros are scattered: item 29);
- ``scan norms A``: every batch norm's statistics A × its trained ones + (1 − A) × the scan's own
  (test-time batch-norm adaptation; A = 0: the scan's alone);
- ``texture terrain CELL/TAU/NEAR`` (after the network, not before it): where the scan's sensor is quiet
  (``m2s_perception.texture``'s gate, 0.2 %), the points the model calls ground at least NEAR m away are
  re-decided by the mean ring texture of the ground-called points in their CELL × CELL m cell: above TAU
  terrain, else the most probable other ground class (item 43; real paved ground reads smooth, grass rough);
- ``connected road STEP`` (after the network too): ground the model calls terrain is re-decided as the most
  probable other ground class where it joins the road under the sensor without a step: 0.5 m cells of the
  ground-called points, each at its median height above the scan's ground plane, flooded from the road cells
  within 6 m through neighbours less than STEP m higher or lower (item 45; far road and cross streets a car
  could drive onto, called terrain, against grass behind kerbs).

For each: present-class mIoU, the IoU of the issue's target classes, and how much of the paved ground
15–30 m away is called terrain (docs/benchmarks.md "Sim-to-real", items 42 and 43), e.g.

    .venv/bin/python -m bench.sensor_matching --checkpoint m2s_perception/weights/demo_student.pt \\
        --data ../shared/real/semantickitti --noise 1 2.5 4 --shuffle 8 32 --scan-norms 0 0.5
    .venv/bin/python -m bench.sensor_matching --checkpoint m2s_perception/weights/demo_student.pt \\
        --data runs/synth_ptex --sequence 08 --texture-terrain 1/0.5/0 2/0.5/10 --connected-road 0.03 0.06

Evaluation only: nothing here is chosen per scan or trained on the real scans.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.ground_split import GROUND, labels_of
from bench.zero_counterfactual import PAVED, paved_called
from m2s_perception.checkpoint import load_model
from m2s_perception.inference import Segmenter
from m2s_perception.labels import load_label_map
from m2s_perception.levelling import fit_ground
from m2s_perception.texture import median_ring_step, plane_height, quiet_ground_step, ramp
from m2s_training.data.semantic_kitti import Sequence, labelled_scans
from m2s_training.metrics import SegmentationMetrics, confusion_matrix

GROUND_BAND = 0.3  # m from the fitted ground plane: what ``shuffle`` counts as ground
ROAD_CELL = 0.5  # m: the cells ``connected road`` floods
ROAD_SEED_RADIUS = 6.0  # m: road cells this near the sensor start the flood (the car stands on road)
QUIET_BOUND = 0.002  # item 41's gate: the ground's median relative ring step of a quiet sensor (real HDL-64E 0.12 %)
TARGETS = ("road", "sidewalk", "building", "vegetation", "car", "terrain")


def with_range_noise(points: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of (N, 4) ``points`` whose ranges move by N(0, ``sigma`` m) along their own rays."""
    out = points.copy()
    distance = np.linalg.norm(points[:, :3], axis=1)
    moved = np.maximum(distance + rng.normal(0.0, sigma, len(points)), 0.01)
    out[:, :3] *= (moved / np.maximum(distance, 1e-6))[:, None]
    return out


def with_ground_remission_shuffled(points: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``points`` whose ground returns (within GROUND_BAND of ``fit_ground``'s plane) trade
    remission within windows of ``window`` consecutive ground returns; a scan without a plane is kept."""
    out = points.copy()
    fit = fit_ground(points)
    if fit is None:
        return out
    ground = np.flatnonzero(np.abs(plane_height(points, fit)) < GROUND_BAND)
    source = ground.copy()
    for start in range(0, len(ground), window):
        source[start : start + window] = rng.permutation(ground[start : start + window])
    out[ground, 3] = points[source, 3]
    return out


def adapted_to(model: nn.Module, cloud: torch.Tensor, keep: float) -> nn.Module:
    """A copy of ``model`` whose batch norms hold ``keep`` × their statistics + (1 − ``keep``) × those of
    one forward pass over ``cloud`` (a prepared scan); its weights are the model's."""
    adapted = copy.deepcopy(model)
    norms = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    trained = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative mean: after one pass, exactly the scan's statistics
    adapted.train()
    with torch.no_grad():
        adapted(cloud, torch.zeros(len(cloud), dtype=torch.long), 1)
    for norm, (mean, var, momentum) in zip(norms, trained, strict=True):
        norm.running_mean.mul_(1 - keep).add_(keep * mean)
        norm.running_var.mul_(1 - keep).add_(keep * var)
        norm.momentum = momentum
    return adapted.eval()


def quiet_sensor(points: np.ndarray, step: np.ndarray) -> bool:
    """Whether the scan's sensor passes item 41's gate (``m2s_perception.texture``'s measure, QUIET_BOUND)."""
    fit = fit_ground(points)
    measured = None if fit is None else quiet_ground_step(points, step, plane_height(points, fit))
    return measured is not None and measured <= QUIET_BOUND


def cell_means(xy: np.ndarray, values: np.ndarray, cell: float) -> np.ndarray:
    """Each point's mean of ``values`` over the points in its ``cell`` × ``cell`` m square of ``xy``."""
    _, index = np.unique(np.floor(xy / cell).astype(np.int64), axis=0, return_inverse=True)
    index = index.ravel()
    return (np.bincount(index, values) / np.bincount(index))[index]


def best_other_ground(probability: np.ndarray, ground_ids: list[int], terrain: int) -> np.ndarray:
    """Each row of (M, C) class ``probability``: its most probable ground class other than ``terrain``."""
    paved_ids = np.array([c for c in ground_ids if c != terrain])
    return paved_ids[probability[:, paved_ids].argmax(1)]


def texture_terrain(
    points: np.ndarray,
    probability: np.ndarray,
    cell: float,
    tau: float,
    near: float,
    ground_ids: list[int],
    terrain: int,
) -> np.ndarray:
    """Labels of (N, C) class ``probability`` with the ground re-decided by ring texture (the docstring's
    ``texture terrain``); the plain argmax where the sensor is not quiet."""
    labels = labels_of(torch.from_numpy(probability)).numpy()  # the node's rule: never 'unlabeled'
    step = median_ring_step(points)
    ground = np.isin(labels, ground_ids) & (np.hypot(points[:, 0], points[:, 1]) >= near)
    if not ground.any() or not quiet_sensor(points, step):
        return labels
    rough = cell_means(points[ground, :2], ramp(step, 0.003, 0.0015)[ground], cell)  # item 39's texture ramp
    labels[ground] = np.where(rough > tau, terrain, best_other_ground(probability[ground], ground_ids, terrain))
    return labels


NEIGHBOURS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]


def moved(grid: np.ndarray, di: int, dj: int) -> np.ndarray:
    """``grid`` (float) moved by (di, dj) cells: out[i, j] = grid[i - di, j - dj]; NaN where nothing moved in."""
    out = np.full_like(grid, np.nan)
    rows, cols = grid.shape
    out[max(di, 0) : rows + min(di, 0), max(dj, 0) : cols + min(dj, 0)] = grid[
        max(-di, 0) : rows + min(-di, 0), max(-dj, 0) : cols + min(-dj, 0)
    ]
    return out


def flooded(height: np.ndarray, seed: np.ndarray, step: float) -> np.ndarray:
    """The cells of a (H, W) ``height`` grid (NaN: no ground) reached from ``seed`` through the 8 neighbours
    whose heights differ by less than ``step``."""
    reached = seed & ~np.isnan(height)
    while True:
        grown = reached.copy()
        for di, dj in NEIGHBOURS:
            with np.errstate(invalid="ignore"):  # NaN compares False: no ground, no way through
                grown |= np.abs(height - moved(np.where(reached, height, np.nan), di, dj)) < step
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def connected_road(
    points: np.ndarray, probability: np.ndarray, step: float, ground_ids: list[int], terrain: int, road: int
) -> np.ndarray:
    """Labels of (N, C) class ``probability`` with the terrain-called ground that joins the sensor's road without a
    step re-decided (the docstring's ``connected road``); the plain argmax where the scan has no ground plane."""
    labels = labels_of(torch.from_numpy(probability)).numpy()
    fit = fit_ground(points)
    ground = np.flatnonzero(np.isin(labels, ground_ids))
    if fit is None or len(ground) == 0:
        return labels
    absolute = np.floor(points[ground, :2] / ROAD_CELL).astype(np.int64)
    cell = absolute - absolute.min(0)
    shape = tuple(cell.max(0) + 1)
    index = cell[:, 0] * shape[1] + cell[:, 1]
    height = plane_height(points[ground], fit)
    order = np.lexsort((height, index))  # by cell, then by height: each cell's median is its middle entry
    first = np.flatnonzero(np.r_[True, index[order][1:] != index[order][:-1]])
    count = np.diff(np.r_[first, len(order)])
    median = np.full(shape[0] * shape[1], np.nan)
    median[index[order][first]] = height[order][first + count // 2]
    centre = (absolute + 0.5) * ROAD_CELL
    near_road = (labels[ground] == road) & (np.hypot(centre[:, 0], centre[:, 1]) < ROAD_SEED_RADIUS)
    roadlike = np.bincount(index, near_road, median.size) * 2 > np.bincount(index, minlength=median.size)
    reached = flooded(median.reshape(shape), roadlike.reshape(shape), step).ravel()
    change = ground[reached[index] & (labels[ground] == terrain)]
    labels[change] = best_other_ground(probability[change], ground_ids, terrain)
    return labels


def score(predict: Callable[[np.ndarray, int], np.ndarray], scans: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """One row: present-class mIoU, the target classes' IoU, and far paved ground called terrain."""
    labels = load_label_map()
    confusion = torch.zeros(labels.num_classes, labels.num_classes, dtype=torch.int64)
    terrain = labels.class_id("terrain")
    far = np.zeros((len(PAVED), 2), np.int64)
    for index, (points, train) in enumerate(scans):
        predicted = predict(points, index)
        confusion += confusion_matrix(
            torch.from_numpy(predicted.astype(np.int64)), torch.from_numpy(train), len(confusion)
        )
        far += paved_called(predicted, train, np.hypot(points[:, 0], points[:, 1]), terrain)
    metrics = SegmentationMetrics.from_confusion(confusion)
    ious = " | ".join(f"{metrics.iou[labels.class_id(name)]:.3f}" for name in TARGETS)
    called = " / ".join(f"{c / max(1, n):.2f}" for n, c in far.tolist())
    return f"{metrics.present_miou:.4f} | {ious} | {called}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="labelled scans (ROOT/sequences/XX/...)")
    parser.add_argument("--noise", nargs="*", type=float, default=[], metavar="CM", help="extra range noise, cm")
    parser.add_argument("--shuffle", nargs="*", type=int, default=[], metavar="W", help="ground remission windows")
    parser.add_argument("--scan-norms", nargs="*", type=float, default=[], metavar="A", help="share of trained stats")
    parser.add_argument("--texture-terrain", nargs="*", default=[], metavar="CELL/TAU/NEAR", help="ground re-decided")
    parser.add_argument("--connected-road", nargs="*", type=float, default=[], metavar="STEP", help="m, see above")
    parser.add_argument("--sequence", help="only this sequence of --data (default: all)")
    parser.add_argument("--every", type=int, default=1, help="every n-th scan (default 1)")
    args = parser.parse_args(argv)
    labels = load_label_map()
    if args.sequence:
        sequence = Sequence(args.data, args.sequence)
        frames = (sequence.frame(i) for i in range(0, len(sequence), args.every))
        scans = [(frame.points, labels.to_train(frame.semantic)) for frame in frames]
    else:
        scans = [(points, labels.to_train(semantic)) for points, semantic in labelled_scans(args.data, args.every)]
    segmenter = Segmenter.from_checkpoint(args.checkpoint, "cpu")

    def changed(
        change: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    ) -> Callable[[np.ndarray, int], np.ndarray]:
        # one generator per scan, seeded by its index: every variant and rerun draws alike
        return lambda points, index: segmenter.predict(change(points, np.random.default_rng(index))).labels

    variants: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
        "as is": lambda points, _: segmenter.predict(points).labels
    }
    for cm in args.noise:
        variants[f"noise {cm:g} cm"] = changed(lambda p, rng, cm=cm: with_range_noise(p, cm / 100, rng))
    for window in args.shuffle:
        variants[f"shuffle {window}"] = changed(lambda p, rng, w=window: with_ground_remission_shuffled(p, w, rng))
    if args.scan_norms:
        model, config, _ = load_model(args.checkpoint, "cpu")
    for keep in args.scan_norms:

        def adapted(points: np.ndarray, _index: int, keep: float = keep) -> np.ndarray:
            cloud = segmenter.prepare(points)  # prepared once: the adaptation and the labels see the same input
            scan = Segmenter(adapted_to(model, torch.from_numpy(cloud), keep), config, "cpu")
            return scan.engine.run(scan.binning(cloud), logits=False).labels

        variants[f"scan norms {keep:g}"] = adapted
    ground_ids = [labels.class_id(name) for name in GROUND]

    def probability(points: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(segmenter.point_logits(segmenter.prepare(points))), dim=1).numpy()

    for setting in args.texture_terrain:
        cell, tau, near = (float(v) for v in setting.split("/"))
        variants[f"texture terrain {cell:g}/{tau:g}/{near:g}"] = lambda points, _, c=cell, t=tau, n=near: (
            texture_terrain(points, probability(points), c, t, n, ground_ids, labels.class_id("terrain"))
        )
    for step in args.connected_road:
        variants[f"connected road {step:g}"] = lambda points, _, s=step: connected_road(
            points, probability(points), s, ground_ids, labels.class_id("terrain"), labels.class_id("road")
        )
    print(f"{args.checkpoint} on {len(scans)} scans of {args.data}")
    print(f"| input | present-class mIoU | {' | '.join(TARGETS)} | {' / '.join(PAVED)} 15–30 m called terrain |")
    print("|---|---|" + "---|" * len(TARGETS) + "---|")
    for name, predict in variants.items():
        print(f"| {name} | {score(predict, scans)} |", flush=True)


if __name__ == "__main__":
    main()
