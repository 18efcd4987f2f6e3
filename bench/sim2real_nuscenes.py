"""Label a real nuScenes LIDAR_TOP sweep (HDL-32E, no labels) and draw it from above.

    .venv/bin/python -m bench.sim2real_nuscenes --checkpoint m2s_perception/weights/demo_student.pt \\
        --sweep /work/shared/real/nuscenes/*.pcd.bin --out docs/nuscenes_bev.png

A sweep is float32 × 5 per point: x, y, z, intensity 0–255, ring. The model wants KITTI's remission
0–1, so intensity is divided by ``--intensity-scale`` (255), as the node's ``intensity_scale``
parameter does. It predicts through ``Segmenter.predict``, the node's code path, and prints the
share of points per predicted class (there is no ground truth to score against).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from m2s_perception.inference import Segmenter
from m2s_perception.labels import load_label_map
from m2s_training.render import render_bev


def read_sweep(path: Path) -> np.ndarray:
    data = np.fromfile(path, np.float32)
    if data.size % 5:
        raise ValueError(f"{path}: {data.size} floats is not a multiple of 5 (x, y, z, intensity, ring)")
    return data.reshape(-1, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--sweep", type=Path, required=True)
    parser.add_argument("--intensity-scale", type=float, default=255.0)
    parser.add_argument("--out", type=Path, default=Path("docs/nuscenes_bev.png"))
    args = parser.parse_args()
    sweep = read_sweep(args.sweep)
    points = sweep[:, :4].copy()
    points[:, 3] /= args.intensity_scale
    label_map = load_label_map()
    prediction = Segmenter.from_checkpoint(args.checkpoint, "cpu").predict(points, ring=sweep[:, 4].astype(np.int64))
    counts = np.bincount(prediction.labels, minlength=label_map.num_classes) / len(points)
    print(f"{args.sweep.name}: {len(points):,} points, {int(sweep[:, 4].max()) + 1} rings, "
          f"z p5/p50 {np.percentile(points[:, 2], [5, 50]).round(2)}")  # fmt: skip
    for c in np.argsort(-counts):
        if counts[c] >= 0.005:
            print(f"  {label_map.class_names[c]:<14} {counts[c]:.3f}")
    render_bev(points, prediction.labels, label_map, args.out, extent_m=40.0, titles=["prediction"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
