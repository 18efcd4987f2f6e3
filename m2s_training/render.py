"""Bird's-eye-view PNGs of labelled point clouds (``m2s-render``; reused by evaluation and the demo).

Image layout: x (forward) points up, y (left) points left, the sensor sits at the image centre.
Pixel (row, col) of a panel covers x = extent − (row + ½)·resolution, y = extent − (col + ½)·resolution.
When points fall on the same pixel the highest one wins, as seen from above. Panels (e.g. ground
truth and prediction) are placed side by side, separated by a 4-pixel gap, followed by a legend of
the classes present; the first panel starts at pixel (0, 0) of the PNG.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence as SequenceOf
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from m2s_perception.labels import LabelMap, load_label_map
from m2s_training.atomic import atomic_path

BACKGROUND = (40, 40, 40)
PANEL_GAP = 4
LEGEND_WIDTH = 220


def rasterize_bev(
    points: np.ndarray,
    train_ids: np.ndarray,
    label_map: LabelMap,
    extent_m: float = 50.0,
    resolution: float = 0.1,
) -> np.ndarray:
    """(H, W, 3) uint8 image of the square ±``extent_m`` around the sensor, one colour per class."""
    points = np.asarray(points)
    train_ids = np.asarray(train_ids)
    if points.ndim != 2 or points.shape[1] < 2:
        raise ValueError(f"points must be (N, >=2) x, y[, z, ...]; got shape {points.shape}")
    if train_ids.shape != (len(points),):
        raise ValueError(f"train_ids must be ({len(points)},) like the points; got shape {train_ids.shape}")
    if extent_m <= 0 or resolution <= 0:
        raise ValueError(f"extent_m and resolution must be positive, got {extent_m}, {resolution}")
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= label_map.num_classes):
        raise ValueError(f"train_ids must be in 0..{label_map.num_classes - 1}")
    size = round(2 * extent_m / resolution)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUND
    rows = np.floor((extent_m - points[:, 0]) / resolution).astype(np.int64)
    cols = np.floor((extent_m - points[:, 1]) / resolution).astype(np.int64)
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    height = points[:, 2] if points.shape[1] > 2 else np.zeros(len(points))
    # Fancy assignment keeps the last write per pixel: draw low points first, high points last.
    order = np.argsort(height[inside], kind="stable")
    rows, cols, ids = rows[inside][order], cols[inside][order], train_ids[inside][order]
    image[rows, cols] = label_map.train_rgb[ids]
    return image


def render_bev(
    points: np.ndarray,
    train_ids: np.ndarray | SequenceOf[np.ndarray],
    label_map: LabelMap | None,
    path: str | Path,
    extent_m: float = 50.0,
    resolution: float = 0.1,
    titles: SequenceOf[str] | None = None,
) -> Path:
    """Write a bird's-eye-view PNG atomically and return its path.

    ``train_ids`` is one (N,) array of training ids, or several (ground truth, prediction, ...)
    drawn as panels side by side; ``titles`` names the panels in the legend column.
    """
    label_map = label_map or load_label_map()
    panels_ids = [train_ids] if isinstance(train_ids, np.ndarray) else list(train_ids)
    if not panels_ids:
        raise ValueError("no labels to render")
    panels = [rasterize_bev(points, ids, label_map, extent_m, resolution) for ids in panels_ids]
    present = np.unique(np.concatenate([np.asarray(ids).ravel() for ids in panels_ids]))
    height = panels[0].shape[0]
    gap = np.full((height, PANEL_GAP, 3), 255, np.uint8)
    columns = []
    for panel in panels:
        columns += [panel, gap]
    columns.append(_legend(label_map, present, height, titles))
    image = np.concatenate(columns, axis=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        plt.imsave(tmp, image, format="png")
    return path


def _legend(label_map: LabelMap, present: np.ndarray, height: int, titles: SequenceOf[str] | None) -> np.ndarray:
    """A white column listing the classes present with their colours, drawn with matplotlib."""
    dpi = 100
    fig = plt.figure(figsize=((LEGEND_WIDTH + 1) / dpi, (height + 1) / dpi), dpi=dpi)  # +1: no rounding short
    try:
        handles = [
            Patch(color=label_map.train_rgb[i] / 255.0, label=label_map.class_names[i]) for i in present.tolist()
        ]
        title = " | ".join(titles) if titles else None
        fig.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, title=title, title_fontsize=8)
        fig.canvas.draw()
        legend = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)
    return legend[:height, :LEGEND_WIDTH]


# --- CLI ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2s-render", description="Bird's-eye-view PNG of a labelled SemanticKITTI scan (and predictions)."
    )
    parser.add_argument("--data", required=True, type=Path, help="data root holding sequences/XX/")
    parser.add_argument("--sequence", required=True, help="sequence, e.g. 08")
    parser.add_argument("--scan", required=True, type=int, help="scan index within the sequence")
    parser.add_argument("--predictions", type=Path, help="root of sequences/XX/predictions/*.label to compare")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--extent", type=float, default=50.0, help="half-width of the view in metres")
    parser.add_argument("--resolution", type=float, default=0.1, help="metres per pixel")
    return parser


def main(argv: list[str] | None = None) -> int:
    from m2s_training.data.semantic_kitti import KittiFormatError, Sequence, prediction_path, read_labels

    args = _parser().parse_args(argv)
    label_map = load_label_map()
    try:
        sequence = Sequence(args.data, args.sequence)
        if not 0 <= args.scan < len(sequence):
            raise ValueError(f"--scan {args.scan} out of range: sequence {sequence.name} has {len(sequence)} scans")
        frame = sequence.frame(args.scan)
        if frame.semantic is None:
            raise KittiFormatError(f"{sequence.path / 'labels'}: no labels to render")
        panels, titles = [label_map.to_train(frame.semantic)], ["ground truth"]
        if args.predictions is not None:
            pred_file = prediction_path(args.predictions, sequence.name, sequence.frame_id(args.scan))
            predicted, _ = read_labels(pred_file, len(frame.points))
            panels.append(label_map.to_train(predicted))
            titles.append("prediction")
        render_bev(frame.points, panels, label_map, args.out, args.extent, args.resolution, titles)
    except (KittiFormatError, ValueError) as error:
        print(f"m2s-render: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
