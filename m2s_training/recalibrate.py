"""``m2s-recalibrate``: measure a trained model's batch-norm statistics again on whole scans.

    m2s-recalibrate --checkpoint runs/student/final.pt --data runs/synth --out runs/student/whole_scans.pt

A model trained on random subsets of each scan (``data.max_train_points``, cheaper CPU steps) and
with point dropout keeps batch-norm statistics of sparse clouds, but labels whole ones: a polar cell
then pools five to six times as many points, its features are larger than any the statistics saw,
and every normalised layer after it is off. Measuring the statistics again over whole, unaugmented
training scans (a plain mean over the batches, as after weight averaging) can fix that without
touching a weight. Measured (docs/benchmarks.md "Sim-to-real", item 26): the shipped sim-to-real
ensemble (20k-point subsets, up to 30 % point dropout) labels its synthetic validation scans at
0.390 mIoU instead of 0.292; the README's synthetic student (30k of ~125k points, no dropout) at
0.846 instead of 0.850, so it is not a gain everywhere. On the real SemanticKITTI scans the shipped
file falls from 0.402 to 0.289 present-class mIoU (its real scores lean on the mismatch), so the
shipped weights are not recalibrated. Use it for a model that will label data like its training
data, and keep it only if ``m2s-eval`` on held-out scans says so.

Scans are read as the Segmenter gives them to the network (``network_input``: the surface texture and
the remission scale where the model has them), not levelled, not augmented, in the order of the split.
Labels are not needed. An ensemble's members are recalibrated together. ``--out`` must not exist: the
source checkpoint is never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from m2s_perception.checkpoint import CheckpointError, load_model, read_checkpoint
from m2s_perception.inference import network_input
from m2s_perception.labels import load_label_map
from m2s_perception.models import ModelConfig
from m2s_training.averaging import recalibrate_batch_norm
from m2s_training.checkpoint import save_checkpoint
from m2s_training.data.semantic_kitti import KittiFormatError, Sequence, existing_split


def whole_scans(data: str | Path, split: str, every: int) -> list[tuple[Sequence, int]]:
    """Every ``every``-th scan of the split's sequences, in order; refuses a split without scans."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    scans = []
    for name in existing_split(data, split):
        sequence = Sequence(data, name)
        scans += [(sequence, i) for i in range(0, len(sequence), every)]
    if not scans:
        raise KittiFormatError(f"{data}: the {split} sequences hold no scans")
    return scans


def scan_batches(
    scans: list[tuple[Sequence, int]], batch_size: int, config: ModelConfig
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """(points, batch index, batch size) of ``batch_size`` whole scans at a time (the last may be smaller)."""
    for start in range(0, len(scans), batch_size):
        clouds = []
        for sequence, index in scans[start : start + batch_size]:
            clouds.append(network_input(sequence.points(index), config))
        batch_index = np.repeat(np.arange(len(clouds)), [len(c) for c in clouds])
        yield torch.from_numpy(np.concatenate(clouds)), torch.from_numpy(batch_index), len(clouds)


def recalibrate(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    split: str = "train",
    every: int = 5,
    batch_size: int = 2,
    device: str = "cpu",
) -> int:
    """Write ``checkpoint`` with batch-norm statistics measured on whole ``split`` scans to ``out``;
    returns the number of scans used."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists: choose another --out (m2s-recalibrate never overwrites)")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    label_map = load_label_map()
    model, config, meta = load_model(checkpoint, device, label_map)
    scans = whole_scans(data, split, every)
    batches = scan_batches(scans, batch_size, config)
    progress = tqdm(batches, total=-(-len(scans) // batch_size), desc="m2s-recalibrate", unit="batch")

    def forward(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor, int]) -> None:
        points, batch_index, size = batch
        net(points.to(device), batch_index.to(device), size)

    recalibrate_batch_norm(model, progress, forward)
    class_names = read_checkpoint(checkpoint).get("class_names") or list(label_map.class_names)
    source = {"file": str(checkpoint), "data": str(data), "split": split, "every": every, "scans": len(scans)}
    save_checkpoint(out, model.eval(), config, class_names=class_names, **meta, batch_norm_recalibrated=source)
    return len(scans)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="m2s-recalibrate", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a trained m2s checkpoint (or ensemble)")
    parser.add_argument("--data", required=True, type=Path, help="SemanticKITTI-layout root of its training data")
    parser.add_argument("--out", required=True, type=Path, help="the checkpoint to write (.pt); must not exist")
    parser.add_argument("--split", default="train", help="split of the label map whose scans to use (default: train)")
    parser.add_argument("--every", type=int, default=5, help="use every N-th scan of each sequence (default: 5)")
    parser.add_argument("--batch-size", type=int, default=2, help="whole scans per forward pass (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    args = parser.parse_args(argv)
    try:
        used = recalibrate(args.checkpoint, args.data, args.out, args.split, args.every, args.batch_size, args.device)
    except (FileNotFoundError, FileExistsError, CheckpointError, KittiFormatError, ValueError) as err:
        sys.exit(f"m2s-recalibrate: {err}")
    print(f"wrote {args.out}: batch-norm statistics of {used} whole scans of {args.data} ({args.split})")


if __name__ == "__main__":
    main()
