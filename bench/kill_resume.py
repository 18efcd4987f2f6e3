"""Kill -9 at random moments of ``m2s-train``, continue with ``--resume``, compare with an uninterrupted run.

For each mode (student; distill with every term on, the sampled affinity terms included) one run goes
through uninterrupted; then each trial starts the same run, SIGKILLs it at a random moment of its life
(start-up, a step, a checkpoint or log write) ``--kills`` times, resuming after each kill (starting
afresh when no checkpoint was written yet), and lets the last attempt finish (a trial whose run
finished before all its kills is repeated with kill moments drawn from a shorter span). A trial passes when the
final weights (model and distillation adapters) equal the uninterrupted run's bit for bit and the run
folder holds no temporaries. Prints a table and writes ``OUT/kill_resume.json``::

    nice -n 10 .venv/bin/python bench/kill_resume.py --out runs/kill_resume --trials 10 --kills 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from m2s_perception.checkpoint import read_checkpoint
from m2s_perception.models import ModelConfig, build_model
from m2s_training.atomic import write_text_atomic
from m2s_training.checkpoint import save_checkpoint
from m2s_training.synth import generate
from m2s_training.trainer import RUN_FILES

REPO = Path(__file__).resolve().parent.parent
GRID = {"grid_size": [24, 24, 8], "rho_range": [2.0, 50.0], "point_channels": [16, 32], "base_channels": 16}
STEPS = 16


def run_config(mode: str, teacher: Path | None) -> dict:
    config = {
        "model": {"backbone": "polar", "width": 0.25, "levels": 2, **GRID},
        "data": {"batch_size": 2, "num_workers": 0, "max_train_points": 4000},
        "optim": {"lr": 0.03, "warmup_steps": 1, "min_lr_ratio": 0.3},
        "train": {"mode": mode, "epochs": 100, "max_steps": STEPS, "checkpoint_every": 1, "log_every": 2},
    }
    if mode == "distill":
        weights = ("feature", "logit_point", "logit_voxel", "instance_affinity", "point_affinity", "voxel_affinity")
        config["train"]["teacher"] = str(teacher)
        config["fusion"] = {}
        config["distill"] = {name: 1.0 for name in weights} | {"supervoxel_cells": [4, 4, 2], "supervoxels_sampled": 4}
    return config


def weights(out: Path) -> dict[str, torch.Tensor]:
    checkpoint = read_checkpoint(out / "last.pt")
    adapters = checkpoint["training_state"]["extra_loss"] or {}
    return {**checkpoint["state_dict"], **{f"adapter.{k}": v for k, v in adapters.items()}}


def trial(command: list[str], out: Path, lifetime: float, kills: int, rng: random.Random) -> dict:
    """Start, SIGKILL at a random moment, resume; ``kills`` times (fewer if a run finishes first), then finish."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed_after = []  # the checkpoint step each kill left (None: killed before the first checkpoint)
    while True:
        resume = ["--resume"] if (out / "last.pt").exists() else []
        process = subprocess.Popen([*command, str(out), *resume], cwd=REPO, env=env, stderr=subprocess.PIPE)
        try:
            _, stderr = process.communicate(timeout=rng.uniform(0.0, lifetime) if len(killed_after) < kills else None)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            step = read_checkpoint(out / "last.pt")["training_state"]["step"] if (out / "last.pt").exists() else None
            killed_after.append(step)
            continue
        if process.returncode != 0:
            raise RuntimeError(f"{out}: m2s-train failed:\n{stderr.decode()[-2000:]}")
        if read_checkpoint(out / "last.pt")["training_state"]["step"] == STEPS:
            break
    leftovers = sorted(p.name for p in out.iterdir() if p.name not in RUN_FILES)
    return {"killed_after_checkpoint_step": killed_after, "leftovers": leftovers}


def bench_mode(mode: str, args: argparse.Namespace, data: Path, teacher: Path) -> dict:
    folder = args.out / mode
    config_path = folder / "config.yaml"
    write_text_atomic(config_path, yaml.safe_dump(run_config(mode, teacher)))
    command = [sys.executable, "-m", "m2s_training.train", "--config", str(config_path), "--data", str(data)]
    command += ["--device", "cpu", "--out"]
    started = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, str(folder / "straight")], cwd=REPO, env=env, check=True, capture_output=True)
    lifetime = time.monotonic() - started
    reference = weights(folder / "straight")
    rng = random.Random(args.seed)
    trials = []
    for number in range(args.trials):
        out = folder / f"trial{number}"
        while True:
            result = trial(command, out, lifetime, args.kills, rng)
            if len(result["killed_after_checkpoint_step"]) == args.kills:
                break
            # the run finished before all its kills: draw the moments from a shorter life, start again
            lifetime /= 2
            shutil.rmtree(out)
        final = weights(out)
        result["identical"] = final.keys() == reference.keys() and all(
            torch.equal(final[k], reference[k]) for k in reference
        )
        trials.append(result)
        print(f"{mode} trial {number}: {result}", flush=True)
    kills = [step for t in trials for step in t["killed_after_checkpoint_step"]]
    return {
        "uninterrupted_seconds": round(lifetime, 1),
        "trials": len(trials),
        "kills": len(kills),
        "kills_before_first_checkpoint": kills.count(None),
        "identical": sum(t["identical"] for t in trials),
        "with_leftovers": sum(bool(t["leftovers"]) for t in trials),
        "details": trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/kill_resume"))
    parser.add_argument("--trials", type=int, default=10, help="killed runs per mode")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per trial before it may finish")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--modes", nargs="+", default=["student", "distill"], choices=["student", "distill"])
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty: choose another --out")
    data = args.out / "data"
    generate(data, ["00"], preset="tiny", scans=4, seed=0)
    generate(data, ["08"], preset="tiny", scans=2, seed=1)
    teacher_config = ModelConfig(backbone="polar", width=0.5, levels=2, **GRID)
    teacher = args.out / "teacher.pt"
    save_checkpoint(teacher, build_model(teacher_config), teacher_config)  # untrained: the arithmetic is the same
    results = {mode: bench_mode(mode, args, data, teacher) for mode in args.modes}
    print("| mode | trials | SIGKILLs (before 1st checkpoint) | identical to uninterrupted | with temporaries left |")
    print("|---|---|---|---|---|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['trials']} | {r['kills']} ({r['kills_before_first_checkpoint']}) | "
            f"{r['identical']}/{r['trials']} | {r['with_leftovers']} |"
        )
    write_text_atomic(args.out / "kill_resume.json", json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
