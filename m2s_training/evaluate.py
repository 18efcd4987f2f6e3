"""``m2s-eval``: segment every scan of a split through ``Segmenter.predict`` and score it.

Writes, under ``--out``:

- ``metrics.json``, written last (an earlier one is removed when the run starts, so it is only ever
  beside a finished run's output): mIoU (official SemanticKITTI definition, see ``m2s_training.metrics``), IoU per
  class name, accuracy, hard-class mIoU, confusion matrix, scan and point counts, timing;
  the mIoU over the classes present in the ground truth (``present_miou``: a few real scans hold
  only some of the 19 classes, and the official mean counts the absent ones as 0);
- ``iou.png``: per-class IoU bar chart;
- ``bev_XX_NNNNNN.png`` (``--bev N``): ground truth | prediction seen from above, first N scans;
- ``sequences/XX/predictions/NNNNNN.label``: raw-id predictions, the layout the official
  ``evaluate_semantics.py`` reads, so it reports the same mIoU.

The folder needs only ``velodyne/`` and ``labels/`` (no poses, calib or times), so a handful of
real scans can be scored as they come. ``--intensity-scale 255`` divides the 4th column first, for
sensors that report intensity 0–255 instead of KITTI's remission 0–1.

Predicting through ``Segmenter.predict`` (the node's code path) makes this evaluation, the node and
``m2s-bag evaluate`` agree label for label.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from m2s_perception.backends import BACKENDS
from m2s_perception.checkpoint import CheckpointError
from m2s_perception.inference import Segmenter
from m2s_perception.labels import load_label_map
from m2s_training.atomic import write_text_atomic
from m2s_training.data.semantic_kitti import KittiFormatError, Sequence, existing_split, write_prediction
from m2s_training.metrics import SegmentationMetrics, confusion_matrix
from m2s_training.reporting import plot_iou


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    split: str,
    out: str | Path,
    device: str = "auto",
    max_scans: int | None = None,
    label_map: str | Path | None = None,
    backend: str = "torch",
    bev: int = 0,
    intensity_scale: float = 1.0,
    level_ground: bool = True,
) -> dict:
    """Predict, write predictions and metrics; return the metrics dict that went to metrics.json.

    ``label_map``: the label map YAML the checkpoint was trained with (None: the packaged one).
    """
    label_map = load_label_map(label_map)
    out = Path(out)
    sequences = [Sequence(data, name) for name in existing_split(data, split, label_map)]
    for seq in sequences:
        if not seq.has_labels:
            raise KittiFormatError(f"{seq.path / 'labels'}: evaluation needs ground-truth labels")
    segmenter = Segmenter.from_checkpoint(
        checkpoint, device, backend=backend, label_map=label_map, level_ground=level_ground
    )
    # metrics.json marks a finished run: an earlier run's must not sit beside this run's partial output.
    (out / "metrics.json").unlink(missing_ok=True)
    scans = [(seq, i) for seq in sequences for i in range(len(seq))][:max_scans]

    confusion = torch.zeros(label_map.num_classes, label_map.num_classes, dtype=torch.int64)
    started = time.perf_counter()
    for number, (seq, index) in enumerate(tqdm(scans, desc=f"m2s-eval {split}", unit="scan", mininterval=2)):
        frame = seq.frame(index)
        points = frame.points.copy()
        points[:, 3] /= intensity_scale
        prediction = segmenter.predict(points)
        write_prediction(out, seq.name, seq.frame_id(index), prediction.labels, label_map)
        target = label_map.to_train(frame.semantic)
        if number < bev:
            from m2s_training.render import render_bev

            path = out / f"bev_{seq.name}_{seq.frame_id(index)}.png"
            render_bev(points, [target, prediction.labels], label_map, path, titles=["ground truth", "prediction"])
        confusion += confusion_matrix(torch.from_numpy(prediction.labels), torch.from_numpy(target), len(confusion))
    seconds = time.perf_counter() - started

    metrics = SegmentationMetrics.from_confusion(confusion, label_map.hard_class_ids())
    result = {
        **metrics.to_dict(label_map),
        "present_classes": [label_map.class_names[c] for c in metrics.present_ids],
        "present_miou": metrics.present_miou,
        "scans": len(scans),
        "sequences": [seq.name for seq in sequences],
        "split": split,
        "checkpoint": str(checkpoint),
        "device": str(segmenter.device),
        "backend": backend,
        "level_ground": level_ground,
        "seconds": round(seconds, 3),
        "ms_per_scan": round(1000 * seconds / max(1, len(scans)), 2),
    }
    plot_iou(metrics, label_map, out / "iou.png", title=f"{Path(checkpoint).name} on {split} ({len(scans)} scans)")
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=1) + "\n")  # last: the run is complete
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="m2s-eval", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="m2s checkpoint (.pt)")
    parser.add_argument("--data", required=True, help="SemanticKITTI-layout root holding sequences/XX")
    parser.add_argument(
        "--split", default="val", help="train | val | test (the label map's split) | all (every sequence folder)"
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--max-scans", type=int, help="evaluate only the first N scans of the split")
    parser.add_argument("--label-map", help="label map YAML the checkpoint was trained with (default: packaged)")
    parser.add_argument(
        "--backend", default="torch", choices=BACKENDS, help="inference engine (onnxruntime/openvino: polar models)"
    )
    parser.add_argument("--bev", type=int, default=0, help="write ground truth | prediction PNGs of the first N scans")
    parser.add_argument(
        "--intensity-scale", type=float, default=1.0, help="divide the 4th column by this (255 for 0-255 intensity)"
    )
    parser.add_argument(
        "--no-level-ground",
        dest="level_ground",
        action="store_false",
        help="predict on the scans as they are (the node's level_ground: false; figures before 2026-11-27 round 13)",
    )
    args = parser.parse_args(argv)
    if args.intensity_scale <= 0:
        parser.error(f"--intensity-scale must be positive, got {args.intensity_scale}")
    try:
        result = evaluate(
            args.checkpoint, args.data, args.split, args.out, args.device, args.max_scans, args.label_map,
            args.backend, bev=args.bev, intensity_scale=args.intensity_scale, level_ground=args.level_ground,
        )  # fmt: skip
    except (FileNotFoundError, KittiFormatError, CheckpointError, KeyError, ValueError) as err:
        sys.exit(f"m2s-eval: {err}")
    print(f"mIoU {result['miou']:.4f}  accuracy {result['accuracy']:.4f}  hard mIoU {result['hard_miou']:.4f}")
    present = ", ".join(result["present_classes"])
    print(f"present-class mIoU {result['present_miou']:.4f} over {len(result['present_classes'])} classes: {present}")
    print(f"{result['scans']} scans, {result['ms_per_scan']} ms/scan on {result['device']}; wrote {args.out}")
    for name, iou in result["iou"].items():
        print(f"  {name:<14} {iou:.4f}")


if __name__ == "__main__":
    main()
