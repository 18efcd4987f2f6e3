"""Real vs synthetic side by side: bird's-eye views and range-image strips (labels and remission).

    .venv/bin/python -m bench.sim2real_pictures --real /work/shared/real/semantickitti \\
        --synthetic runs/synth_kitti --synthetic-sequence 08 --out docs/real_vs_synthetic.png

Real scans are only looked at here (calibration), never trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from m2s_perception.labels import load_label_map
from m2s_training.data.semantic_kitti import Sequence, list_sequences
from m2s_training.render import rasterize_bev


def range_image(points: np.ndarray, values: np.ndarray, rows: int = 64, cols: int = 1024) -> np.ndarray:
    """(rows, cols, ...) image over elevation +3°…−25° and azimuth ±180°; nearest point per pixel wins."""
    rho = np.hypot(points[:, 0], points[:, 1])
    elevation = np.degrees(np.arctan2(points[:, 2], rho))
    azimuth = np.degrees(np.arctan2(points[:, 1], points[:, 0]))
    r = np.clip(((3.0 - elevation) / 28.0 * rows).astype(int), 0, rows - 1)
    c = np.clip(((180.0 - azimuth) / 360.0 * cols).astype(int), 0, cols - 1)
    image = np.zeros((rows, cols, *values.shape[1:]), values.dtype)
    order = np.argsort(-rho)  # far first, near last: the nearest return is what the sensor sees
    image[r[order], c[order]] = values[order]
    return image


def load(root: Path, sequence: str | None, index: int) -> tuple[np.ndarray, np.ndarray]:
    seq = Sequence(root, sequence or list_sequences(root)[0])
    points = seq.points(index)
    semantic, _ = seq.labels(index, len(points))
    return points, load_label_map().to_train(semantic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--real", type=Path, default=Path("/work/shared/real/semantickitti"))
    parser.add_argument("--synthetic", type=Path, required=True)
    parser.add_argument("--synthetic-sequence", default="08")
    parser.add_argument("--synthetic-scan", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/real_vs_synthetic.png"))
    args = parser.parse_args()
    label_map = load_label_map()
    scans = {
        "real SemanticKITTI 00/000000": load(args.real, None, 0),
        f"m2s-synth --preset kitti {args.synthetic_sequence}/{args.synthetic_scan:06d}": load(
            args.synthetic, args.synthetic_sequence, args.synthetic_scan
        ),
    }
    fig = plt.figure(figsize=(16, 13))
    grid = fig.add_gridspec(5, 2, height_ratios=[6, 0.7, 0.7, 0.7, 0.7])
    for column, (title, (points, labels)) in enumerate(scans.items()):
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(rasterize_bev(points, labels, label_map, extent_m=40.0, resolution=0.1))
        ax.set_title(f"{title}: {len(points):,} points (BEV ±40 m, labels)")
        ax.axis("off")
    for row, (title, (points, labels)) in enumerate(scans.items()):
        strip = range_image(points, label_map.train_rgb[labels])
        ax = fig.add_subplot(grid[1 + row, :])
        ax.imshow(strip, aspect="auto", interpolation="nearest")
        ax.set_title(f"range image, labels: {title}", fontsize=9)
        ax.axis("off")
        ax = fig.add_subplot(grid[3 + row, :])
        ax.imshow(
            range_image(points, points[:, 3]), aspect="auto", cmap="gray", vmin=0, vmax=0.7, interpolation="nearest"
        )
        ax.set_title(f"range image, remission: {title}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
