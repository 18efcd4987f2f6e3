"""What ground levelling costs ``Segmenter.predict``: the same scans levelled and not, interleaved in one
process, with the ratio; optionally with another implementation of ``level()`` (a file, e.g. an older
commit's ``m2s_perception/levelling.py``), which then runs in place of the package's.

    .venv/bin/python -m bench.levelling_cost --real ../shared/real [--members 1] [--levelling OLD.py]
    git show c1fa3b9:m2s_perception/levelling.py > /tmp/old_levelling.py   # an older one, for --levelling

Run each implementation in its own process: the cost this was written to find is not ``level()``'s own
time but what a numpy matrix product leaves behind: OpenBLAS's threads keep spinning after it and take
the cores from the network that runs next (docs/benchmarks.md "GPU", "Where the time goes").
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

import m2s_perception.inference as inference
from bench.bench_backbones import read_scan
from m2s_perception.inference import Segmenter
from m2s_perception.models.ensemble import first_members
from m2s_perception.resources import DEMO_CHECKPOINT


def level_from(path: Path):
    spec = importlib.util.spec_from_file_location("levelling_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, required=True, help="every *.bin scan under this folder")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--members", type=int, default=1, help="first N networks of an ensemble (0: all)")
    parser.add_argument("--levelling", type=Path, help="a file defining level(points), used instead of the package's")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    if args.levelling is not None:
        inference.level = level_from(args.levelling)  # what Segmenter.prepare calls
    torch.set_num_threads(args.threads)
    demo = Segmenter.from_checkpoint(args.checkpoint, "cpu")
    model, config = first_members(demo.model, args.members or demo.config.members)
    levelled, as_is = (Segmenter(model, config, "cpu", level_ground=flag) for flag in (True, False))
    scans = [read_scan(path) for path in sorted(args.real.rglob("*.bin"))]
    if not scans:
        raise SystemExit(f"no *.bin scans under {args.real}")
    runs = {"predict, levelled": [], "predict, not levelled": [], "level() alone": []}
    for round_ in range(args.rounds + 2):  # two warm-up rounds
        points = scans[round_ % len(scans)]
        for name, run in zip(runs, (levelled.predict, as_is.predict, inference.level), strict=True):
            start = time.perf_counter()
            run(points)
            if round_ >= 2:
                runs[name].append(1e3 * (time.perf_counter() - start))
    medians = {name: statistics.median(times) for name, times in runs.items()}
    which = args.levelling or "m2s_perception/levelling.py"
    print(f"{which}: {config.members} network(s), {args.threads} torch threads, {len(scans)} scans")
    for name, value in medians.items():
        print(f"  {name:24s} {value:7.1f} ms (median of {args.rounds})")
    ratio = medians["predict, levelled"] / medians["predict, not levelled"]
    print(f"  levelled / not levelled  {ratio:7.2f}x")


if __name__ == "__main__":
    main()
