"""How much the ground's rings step up and down from one ring to the next, in real and synthetic scans
(a calibration statistic).

A real HDL-64E's lasers each point slightly off the elevation its calibration table says, so on flat
ground every ring lies a little high or low (about range × offset); a simulated sensor with a perfect
table lays the rings of a flat road exactly on it. The first root (the real scans) is read whole, the
others every ``--every``-th scan; each scan is levelled (``m2s_perception.levelling``, as the node
and ``m2s-eval`` do). Rings are found from the points' order (the sensor's, ring by ring: a new ring
starts where the azimuth wraps round). Per class, per 30° sector and per ring, the median height of
the returns ``--near``–``--far`` m away; along the rings of a sector, ordered by range, each ring's
height minus the straight line through its two neighbours (a second difference: a smooth slope or
bend gives ~0, independent ring offsets of σ give σ·√1.5). Reported: the robust std (1.4826 × MAD)
of those steps in cm and, divided by the ring's range, in degrees (docs/benchmarks.md item 23), e.g.

    .venv/bin/python -m bench.ring_steps /work/shared/real/semantickitti runs/synth_patchy --every 8
"""

from __future__ import annotations

import numpy as np

from bench.compare_roots import roots_parser, scans_by_root
from m2s_perception.labels import load_label_map
from m2s_perception.levelling import level

CLASSES = ("road", "sidewalk", "terrain")
SECTOR_DEG = 30.0


def ring_index(points: np.ndarray) -> np.ndarray:
    """Each point's ring, from the sensor's order: a new ring where the azimuth jumps by more than π."""
    azimuth = np.arctan2(points[:, 1], points[:, 0])
    starts = np.zeros(len(points), np.int64)
    starts[1:] = np.abs(np.diff(azimuth)) > np.pi
    return np.cumsum(starts)


def ring_steps(
    points: np.ndarray, mask: np.ndarray, near: float, far: float, min_points: int = 15, max_gap: float = 6.0
) -> np.ndarray:
    """(K, 2): each ring's step (m) against the line through its neighbours in range, and its range (m),
    for the ``mask``ed returns of one scan, per 30° sector; neighbours more than ``max_gap`` m apart
    (a hole in the class) give no step."""
    ring = ring_index(points)
    levelled = level(points)
    distance = np.hypot(levelled[:, 0], levelled[:, 1])
    sector = np.floor((np.arctan2(levelled[:, 1], levelled[:, 0]) + np.pi) / np.radians(SECTOR_DEG)).astype(int)
    chosen = mask & (distance >= near) & (distance < far)
    steps = []
    for s in np.unique(sector[chosen]):
        in_sector = chosen & (sector == s)
        rings = []
        for r in np.unique(ring[in_sector]):
            member = in_sector & (ring == r)
            if member.sum() >= min_points:
                rings.append((float(np.median(distance[member])), float(np.median(levelled[member, 2]))))
        rings.sort()
        for (r0, z0), (r1, z1), (r2, z2) in zip(rings, rings[1:], rings[2:], strict=False):
            if r2 - r0 > max_gap or r2 - r0 <= 0:
                continue
            expected = z0 + (r1 - r0) / (r2 - r0) * (z2 - z0)
            steps.append((z1 - expected, r1))
    return np.asarray(steps, dtype=np.float64).reshape(-1, 2)


def robust_std(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def describe(name: str, steps: dict[str, np.ndarray]) -> str:
    lines = [f"{name}:"]
    for cls, found in steps.items():
        if len(found) == 0:
            lines.append(f"  {cls:9s} no rings")
            continue
        cm, deg = 100 * robust_std(found[:, 0]), np.degrees(robust_std(found[:, 0] / found[:, 1]))
        lines.append(f"  {cls:9s} {len(found):5d} steps, robust std {cm:.2f} cm = {deg:.3f} deg")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = roots_parser(__doc__, every=8, band=(8.0, 30.0))
    args = parser.parse_args(argv)
    labels = load_label_map()
    ids = {cls: labels.class_id(cls) for cls in CLASSES}
    for root, labelled in scans_by_root(args.roots, args.every):
        found: dict[str, list[np.ndarray]] = {cls: [] for cls in CLASSES}
        for points, semantic in labelled:
            train = labels.to_train(semantic)
            for cls, class_id in ids.items():
                found[cls].append(ring_steps(points, train == class_id, args.near, args.far))
        print(describe(str(root), {cls: np.concatenate(parts) for cls, parts in found.items()}))


if __name__ == "__main__":
    main()
