"""``m2s-train``: train a backbone as student, teacher or distilled student from a YAML config.

Examples::

    m2s-train --config config/train_polar_synthetic.yaml --data data/synth --out runs/polar_student
    m2s-train --config config/train_polar_synthetic.yaml --data data/synth --out runs/polar_student --resume
    torchrun --nproc-per-node 2 -m m2s_training.train --config ... --data ... --out ...   # DDP
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from m2s_training.trainer import MODES, TrainConfig, Trainer, load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="m2s-train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", required=True, help="training YAML (see config/train_*.yaml)")
    parser.add_argument("--data", required=True, help="SemanticKITTI-layout root holding sequences/XX")
    parser.add_argument("--out", required=True, help="run directory: checkpoints, log.csv, curves.png")
    parser.add_argument("--mode", choices=MODES, default="student")
    parser.add_argument("--teacher", help="teacher checkpoint (distill mode)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--max-steps", type=int, help="override the config's max_steps")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--batch-size", type=int, help="override data.batch_size (per process)")
    parser.add_argument("--workers", type=int, help="override data.num_workers")
    return parser.parse_args(argv)


def apply_overrides(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    top = {
        k: v
        for k, v in {"epochs": args.epochs, "max_steps": args.max_steps, "seed": args.seed}.items()
        if v is not None
    }
    data = {k: v for k, v in {"batch_size": args.batch_size, "num_workers": args.workers}.items() if v is not None}
    return dataclasses.replace(config, **top, data=dataclasses.replace(config.data, **data))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), args)
        trainer = Trainer(config, args.data, args.out, args.mode, args.teacher, args.device, args.resume)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as err:
        sys.exit(f"m2s-train: {err}")
    trainer.fit()


if __name__ == "__main__":
    main()
