"""``m2s-ensemble``: one checkpoint from several trained ones, their class probabilities averaged.

    m2s-ensemble --out runs/ensemble.pt runs/seed0/final.pt runs/seed1/final.pt runs/seed2/final.pt ...

The members must share the model config (backbone, width, grid, ...) and the class names; each is
loaded and checked as ``m2s-segment`` would load it. The result is an ordinary m2s checkpoint
(``model.members`` = N, weights ``members.<i>.<name>``) that the node, ``m2s-eval``, ``m2s-bag``
and ``m2s-export`` take like any other; it costs N forward passes per scan. ``--out`` must not exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path

from m2s_perception.checkpoint import CheckpointError, load_model
from m2s_perception.labels import load_label_map
from m2s_perception.models.ensemble import Ensemble
from m2s_training.checkpoint import save_checkpoint


def assemble(members: list[Path], out: Path, label_map_path: str | Path | None = None) -> None:
    """Write the ensemble of ``members`` to ``out`` (refused if it exists or the members differ)."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 checkpoints, got {len(members)}")
    if out.exists():
        raise FileExistsError(f"{out} exists: choose another --out (m2s-ensemble never overwrites)")
    label_map = load_label_map(label_map_path)
    models, configs, described = [], [], []
    for path in members:
        model, config, meta = load_model(path, "cpu", label_map)
        if config.members != 1:
            raise ValueError(f"{path} is itself an ensemble ({config.members} members): give its members instead")
        models.append(model)
        configs.append(config)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        described.append(
            {"file": str(path), "sha256": digest, "step": meta.get("step"), "val_miou": meta.get("val_miou")}
        )
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
    parser.add_argument("checkpoints", nargs="+", type=Path, help="trained m2s checkpoints of one model config")
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
