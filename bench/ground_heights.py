"""How high each kind of ground lies above the road under the sensor, in real and synthetic scans
(a calibration statistic), on levelled scans.

The first root (the real scans) is read whole, the others every ``--every``-th scan. Each scan is
levelled on its own ground plane (``m2s_perception.levelling``, as the node and ``m2s-eval`` do); per
scan the reference is the median height of the road returns within ``--under`` m (a scan with fewer
than 100 is skipped). Per class (road, sidewalk, parking, terrain) and range band (0–15, 15–30 m):
p10 / 50 / 90 of the returns' height above that reference, over all scans. Round 12 measured a
statistic like it on the scans as they are (docs/benchmarks.md item 13), where the sensor's 1.5–1.8°
tilt moves a 15 m-away return by ±0.4 m; levelled, it reads otherwise (item 23), e.g.

    .venv/bin/python -m bench.ground_heights /work/shared/real/semantickitti runs/synth_patchy --every 16
"""

from __future__ import annotations

import numpy as np

from bench.compare_roots import roots_parser, scans_by_root
from m2s_perception.labels import load_label_map
from m2s_perception.levelling import level

CLASSES = ("road", "sidewalk", "parking", "terrain")
BANDS = {"0-15 m": (0.0, 15.0), "15-30 m": (15.0, 30.0)}


def heights_above_road(
    points: np.ndarray, classes: np.ndarray, road_id: int, under: float = 12.0, min_road: int = 100
) -> tuple[np.ndarray, np.ndarray] | None:
    """(height above the road within ``under`` m, horizontal range) per point of the levelled scan;
    None when the scan has fewer than ``min_road`` road returns that near."""
    levelled = level(points)
    distance = np.hypot(levelled[:, 0], levelled[:, 1])
    near_road = (classes == road_id) & (distance < under)
    if near_road.sum() < min_road:
        return None
    return levelled[:, 2] - np.median(levelled[near_road, 2]), distance


def describe(name: str, heights: dict[tuple[str, str], list[np.ndarray]]) -> str:
    lines = [f"{name}: height above the road within reach, p10/50/90 (m)"]
    for cls in CLASSES:
        cells = []
        for band in BANDS:
            values = np.concatenate(heights.get((cls, band), [np.zeros(0)]))
            if len(values) < 50:
                cells.append(f"{band}: —")
            else:
                cells.append(f"{band}: " + "/".join(f"{v:+.2f}" for v in np.percentile(values, [10, 50, 90])))
        lines.append(f"  {cls:9s} " + "   ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = roots_parser(__doc__, every=16)
    parser.add_argument("--under", type=float, default=12.0, help="the road within this range is the reference")
    args = parser.parse_args(argv)
    labels = load_label_map()
    ids = {cls: labels.class_id(cls) for cls in CLASSES}
    for root, labelled in scans_by_root(args.roots, args.every):
        heights: dict[tuple[str, str], list[np.ndarray]] = {}
        for points, semantic in labelled:
            classes = labels.to_train(semantic)
            measured = heights_above_road(points, classes, ids["road"], args.under)
            if measured is None:
                continue
            height, distance = measured
            for cls, class_id in ids.items():
                for band, (near, far) in BANDS.items():
                    chosen = (classes == class_id) & (distance >= near) & (distance < far)
                    heights.setdefault((cls, band), []).append(height[chosen])
        print(describe(str(root), heights))


if __name__ == "__main__":
    main()
