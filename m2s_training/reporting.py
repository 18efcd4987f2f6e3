"""What runs leave for people to read: the training log (long-format CSV) and its plots.

``CsvLog`` and ``plot_curves`` serve ``m2s-train``; ``plot_iou`` serves ``m2s-eval`` and
``m2s-bag evaluate``. Every file is written atomically, so a killed run never leaves half a PNG.
"""

from __future__ import annotations

import csv
from pathlib import Path

from m2s_perception.labels import LabelMap
from m2s_training.atomic import atomic_path, write_text_atomic
from m2s_training.metrics import SegmentationMetrics


class CsvLog:
    """Long-format CSV: step, epoch, split, name, value; on resume rows after the checkpoint are cut."""

    FIELDS = ("step", "epoch", "split", "name", "value")

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = self.read(path) if resume_step is not None and path.exists() else []
        rows = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
        text = ",".join(self.FIELDS) + "\n" + "".join(",".join(str(r[k]) for k in self.FIELDS) + "\n" for r in rows)
        write_text_atomic(path, text)

    def write(self, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            for name, value in values.items():
                writer.writerow([step, epoch, split, name, f"{value:.6g}"])

    @classmethod
    def read(cls, path: Path) -> list[dict[str, str]]:
        """The complete rows; a row cut short by a killed run (a missing or empty field) is left out."""
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        return [r for r in rows if all(r.get(k) for k in cls.FIELDS) and r["step"].isdigit()]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(log_path: Path, png_path: Path) -> None:
    """Training loss terms (left) and validation metrics (right) against the step."""
    plt = _pyplot()
    series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for row in CsvLog.read(log_path):
        steps, values = series.setdefault((row["split"], row["name"]), ([], []))
        steps.append(int(row["step"]))
        values.append(float(row["value"]))
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for (split, name), (steps, values) in sorted(series.items()):
        if split == "train" and name != "lr":
            ax_loss.plot(steps, values, label=name)
        elif split == "val" and name in ("miou", "hard_miou", "accuracy"):
            ax_val.plot(steps, values, marker="o", label=name)
    ax_loss.set(title="training loss terms", xlabel="step", ylabel="loss")
    ax_val.set(title="validation", xlabel="step", ylim=(0, 1))
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def plot_iou(metrics: SegmentationMetrics, label_map: LabelMap, path: Path, title: str = "") -> None:
    """Horizontal bars of IoU per class in the class colours, with the mIoU as a dashed line."""
    plt = _pyplot()
    ids = list(range(1, len(metrics.iou)))
    names = [label_map.class_names[c] for c in ids]
    colours = label_map.train_rgb[ids] / 255.0
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh(names, metrics.iou[ids], color=colours, edgecolor="black", linewidth=0.5)
    ax.axvline(metrics.miou, color="black", linestyle="--", label=f"mIoU {metrics.miou:.3f}")
    for y, value in enumerate(metrics.iou[ids]):
        # a white box keeps the value readable where it crosses the mIoU line
        ax.text(value + 0.01, y, f"{value:.2f}", va="center", fontsize=8, bbox=dict(fc="white", ec="none", pad=0.5))
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.08), xlabel="IoU", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
