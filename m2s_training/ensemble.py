"""``m2s-ensemble``: one checkpoint from several trained ones, their class probabilities averaged.

    m2s-ensemble --out runs/ensemble.pt runs/seed0/final.pt runs/seed1/final.pt runs/seed2/final.pt ...
    m2s-ensemble --out runs/mixed.pt runs/seed0/final.pt runs/seed1/final.pt runs/old.pt#0 runs/old.pt#1

The members must share the model config (backbone, width, grid, ...) and the class names; each is
loaded and checked as ``m2s-segment`` would load it. The result is an ordinary m2s checkpoint
(``model.members`` = N, weights ``members.<i>.<name>``) that the node, ``m2s-eval``, ``m2s-bag``
and ``m2s-export`` take like any other; it costs N forward passes per scan. ``--out`` must not exist.
``ENSEMBLE.pt#i`` takes network i (from 0) of an ensemble checkpoint, with the record of where that
network came from: networks trained alike on two synthetic worlds err apart, and the shipped weights
mix two earlier ensembles so (docs/benchmarks.md "Sim-to-real", item 36).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import sys
from pathlib import Path

from torch import nn

from m2s_perception.checkpoint import CheckpointError, load_model
from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.models import ModelConfig
from m2s_perception.models.ensemble import Ensemble
from m2s_training.checkpoint import save_checkpoint


def load_member(spec: str | Path, label_map: LabelMap) -> tuple[nn.Module, ModelConfig, dict]:
    """One network: a trained checkpoint, or ``ENSEMBLE.pt#i``, network i of an ensemble; with the record
    that the new checkpoint keeps of it (its file, sha256, step and validation mIoU)."""
    found = re.fullmatch(r"(.+)#(\d+)", str(spec))
    path = Path(found.group(1) if found else spec)
    model, config, meta = load_model(path, "cpu", label_map)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if found is None:
        if config.members != 1:
            raise ValueError(
                f"{path} is itself an ensemble ({config.members} members): give its members instead ({path}#0 ...)"
            )
        record = {"file": str(path), "sha256": digest, "step": meta.get("step"), "val_miou": meta.get("val_miou")}
        return model, config, record
    index = int(found.group(2))
    if config.members == 1:
        raise ValueError(f"{path} holds one network, not an ensemble: give it without #{index}")
    if index >= config.members:
        raise ValueError(f"{path} holds {config.members} networks (#0 to #{config.members - 1}), not #{index}")
    origin = (meta.get("members") or [{}] * config.members)[index]  # where that network was trained
    record = {**origin, "taken_from": f"{path}#{index}", "taken_sha256": digest}
    return model.members[index], model.member_config, record


def assemble(members: list[str | Path], out: Path, label_map_path: str | Path | None = None) -> None:
    """Write the ensemble of ``members`` (checkpoints, or ``ENSEMBLE.pt#i``) to ``out`` (refused if it
    exists or the members differ)."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 checkpoints, got {len(members)}")
    if out.exists():
        raise FileExistsError(f"{out} exists: choose another --out (m2s-ensemble never overwrites)")
    label_map = load_label_map(label_map_path)
    models, configs, described = [], [], []
    for spec in members:
        model, config, record = load_member(spec, label_map)
        models.append(model)
        configs.append(config)
        described.append(record)
    first = configs[0].to_dict()
    for path, config in zip(members[1:], configs[1:], strict=True):
        if config != configs[0]:
            differ = [k for k, v in config.to_dict().items() if first[k] != v]
            raise ValueError(f"{path}: its model config differs from {members[0]}'s in {', '.join(differ)}")
    ensemble = Ensemble(dataclasses.replace(configs[0], members=len(members)), models)
    # load_model checked each member's class names against the label map: they are its names
    class_names = list(label_map.class_names)
    save_checkpoint(out, ensemble, ensemble.config, class_names=class_names, mode="ensemble", members=described)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="m2s-ensemble", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "checkpoints", nargs="+", help="trained m2s checkpoints of one model config, or ENSEMBLE.pt#i (its network i)"
    )
    parser.add_argument("--out", required=True, type=Path, help="the ensemble checkpoint to write (.pt)")
    parser.add_argument("--label-map", help="label map YAML the members were trained with (default: packaged)")
    args = parser.parse_args(argv)
    try:
        assemble(args.checkpoints, args.out, args.label_map)
    except (FileNotFoundError, FileExistsError, CheckpointError, ValueError) as err:
        sys.exit(f"m2s-ensemble: {err}")
    print(f"wrote {args.out}: {len(args.checkpoints)} members, class probabilities averaged")


if __name__ == "__main__":
    main()
