"""How high the road lies away from the sensor, against the road under it, in real and synthetic scans
(a calibration statistic).

The first root (the real scans) is read whole, the others every ``--every``-th scan. Each scan is
levelled on its own ground plane (``m2s_perception.levelling``, as the node and ``m2s-eval`` do).
Per scan and per 90° sector around the sensor (ahead: +x, left: +y, behind, right), the statistic
is the median height of the road returns ``--near``–``--far`` m away minus the median height of the
road within ``--under`` m; a sector needs 50 road returns in both. Labels are read for the statistic
only. A student that only ever saw level streets may take a road that climbs for the grass beside it
(docs/benchmarks.md "Sim-to-real", round 20), e.g.

    .venv/bin/python -m bench.road_rise /work/shared/real/semantickitti runs/synth_patchy --every 16
"""

from __future__ import annotations

import numpy as np

from bench.compare_roots import roots_parser, scans_by_root
from m2s_perception.labels import load_label_map
from m2s_perception.levelling import level

SECTORS = ("ahead", "left", "behind", "right")


def road_rise(
    points: np.ndarray, road: np.ndarray, near: float, far: float, under: float, min_points: int = 50
) -> dict[str, float]:
    """Per sector with enough road: median height of the road ``near``–``far`` m away minus that of the
    road within ``under`` m, on the scan levelled on its ground plane (as it is when none is found)."""
    levelled = level(points)
    distance = np.hypot(levelled[:, 0], levelled[:, 1])
    below = road & (distance < under)
    if below.sum() < min_points:
        return {}
    base = float(np.median(levelled[below, 2]))
    # sector 0 is centred on +x (ahead), 1 on +y (left), 2 on -x, 3 on -y
    sector = np.floor((np.arctan2(levelled[:, 1], levelled[:, 0]) + np.pi / 4) / (np.pi / 2)).astype(int) % 4
    rises = {}
    for index, name in enumerate(SECTORS):
        away = road & (sector == index) & (distance >= near) & (distance < far)
        if away.sum() >= min_points:
            rises[name] = float(np.median(levelled[away, 2])) - base
    return rises


def describe(name: str, rises: dict[str, list[float]]) -> str:
    lines = [f"{name}:"]
    for sector in SECTORS:
        values = np.asarray(rises[sector])
        if len(values) == 0:
            lines.append(f"  {sector:6s} no scan with enough road")
            continue
        q10, q50, q90 = np.percentile(values, [10, 50, 90])
        lines.append(
            f"  {sector:6s} {len(values):4d} scans, rise p10/50/90 {q10:+.2f}/{q50:+.2f}/{q90:+.2f} m, "
            f"|rise| > 0.2 m in {np.mean(np.abs(values) > 0.2):.0%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = roots_parser(__doc__, every=16, band=(15.0, 30.0))
    parser.add_argument("--under", type=float, default=8.0, help="the road within this range is 'under' the sensor")
    args = parser.parse_args(argv)
    labels = load_label_map()
    road_id = labels.class_id("road")
    for root, labelled in scans_by_root(args.roots, args.every):
        rises: dict[str, list[float]] = {sector: [] for sector in SECTORS}
        for points, semantic in labelled:
            road = labels.to_train(semantic) == road_id
            for sector, rise in road_rise(points, road, args.near, args.far, args.under).items():
                rises[sector].append(rise)
        print(describe(str(root), rises))


if __name__ == "__main__":
    main()
