"""``m2s-train``: train a backbone as student, teacher or distilled student from a YAML config.

Examples::

    m2s-train --config config/train_polar_synthetic.yaml --data data/synth --out runs/polar_student
    m2s-train --config config/train_polar_synthetic.yaml --data data/synth --out runs/polar_student --resume
    m2s-train --config config/train_polar_synthetic.yaml --data data/synth --out runs/lr3 \\
        --set optim.lr=3e-3 --set model.grid_size=[240,180,16]
    torchrun --nproc-per-node 2 -m m2s_training.train --config ... --data ... --out ...   # DDP

``--set SECTION.KEY=VALUE`` overrides any key of the config (the value is read as YAML and checked
against the key's type); the run's ``OUT/config.yaml`` records the result, mode and teacher included.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from m2s_training.config import MODES, load_config, parse_overrides
from m2s_training.trainer import Trainer

# Shorthand options: each is a --set of one key.
SHORTHANDS = {
    "mode": "train.mode",
    "teacher": "train.teacher",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "seed": "train.seed",
    "batch_size": "data.batch_size",
    "workers": "data.num_workers",
    "label_map": "label_map",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="m2s-train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", required=True, help="training YAML (see config/train_*.yaml)")
    parser.add_argument("--data", required=True, help="SemanticKITTI-layout root holding sequences/XX")
    parser.add_argument("--out", required=True, help="run directory: checkpoints, log.csv, curves.png, config.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key, e.g. optim.lr=3e-3 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--mode", choices=MODES, help="= --set train.mode=MODE (default: the config's, student)")
    parser.add_argument("--teacher", help="= --set train.teacher=CKPT: teacher checkpoint (distill mode)")
    parser.add_argument("--label-map", help="= --set label_map=YAML (default: the packaged SemanticKITTI map)")
    parser.add_argument("--epochs", type=int, help="= --set train.epochs=N")
    parser.add_argument("--max-steps", type=int, help="= --set train.max_steps=N")
    parser.add_argument("--seed", type=int, help="= --set train.seed=N")
    parser.add_argument("--batch-size", type=int, help="= --set data.batch_size=N (per process)")
    parser.add_argument("--workers", type=int, help="= --set data.num_workers=N")
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted key → value: the shorthand options, then every --set (so --set wins for the same key)."""
    values = {key: getattr(args, name) for name, key in SHORTHANDS.items() if getattr(args, name) is not None}
    return {**values, **parse_overrides(args.overrides)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = load_config(args.config, overrides(args))
        trainer = Trainer(config, args.data, args.out, args.device, args.resume)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as err:
        sys.exit(f"m2s-train: {err}")
    trainer.fit()


if __name__ == "__main__":
    main()
