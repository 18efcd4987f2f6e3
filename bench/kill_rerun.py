"""kill -9 ``kitti2bag``, ``m2s-eval`` and ``m2s-bag evaluate`` at random moments, then rerun them.

    PYTHONPATH=. .venv/bin/python bench/kill_rerun.py [--trials 5] [--scans 20] [--seed 0]

For each tool: one uninterrupted reference run; then ``--trials`` times: start the tool, SIGKILL it
(only the tool's own process, as the OOM killer or ``kill -9`` would) after a random delay between
0 and 1.2 x the reference duration, and check
- orphans: no process the tool started (the node of ``m2s-bag evaluate``) is alive 5 s later;
- partial output: the output either does not look complete (no bag at ``--out``, no ``metrics.json``)
  or equals the reference (the kill came after the tool finished);
then rerun the tool on the same output path, uninterrupted, and compare with the reference: the bag's
messages byte for byte; ``metrics.json`` without timing fields; every prediction file byte for byte.
The synthetic data (``m2s-synth`` tiny preset) and the shipped demo weights are the inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from m2s_training.bag import use_loopback_dds

DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "m2s_perception" / "weights" / "demo_student.pt"
TIMING_KEYS = {"seconds", "ms_per_scan", "latency_ms", "output_bag", "iou_png", "node_log"}


def tools(data: Path) -> dict[str, callable]:
    """Command line of each tool for an output path."""
    py = [sys.executable, "-m"]
    return {
        "kitti2bag": lambda out: [*py, "m2s_training.bag.cli", "kitti2bag", "--data", str(data), "--sequence", "08",
                                  "--out", str(out / "bag"), "--overwrite"],
        "m2s-eval": lambda out: [*py, "m2s_training.evaluate", "--checkpoint", str(DEMO_WEIGHTS), "--data", str(data),
                                 "--split", "val", "--out", str(out), "--device", "cpu"],
        "bag evaluate": lambda out: [*py, "m2s_training.bag.cli", "evaluate", str(data.parent / "input_bag"),
                                     "--checkpoint", str(DEMO_WEIGHTS), "--out", str(out), "--lockstep",
                                     "--device", "cpu"],
    }  # fmt: skip


def fingerprint(tool: str, out: Path) -> object | None:
    """What a finished run produced, comparable across runs; None when the output does not look complete."""
    if tool == "kitti2bag":
        bag = out / "bag"
        if not (bag / "metadata.yaml").is_file():
            return None
        from m2s_training.bag import open_bag

        reader = open_bag(bag)
        try:
            return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
        finally:
            reader.close()
    metrics = out / "metrics.json"
    if not metrics.is_file():
        return None
    result = {k: v for k, v in json.loads(metrics.read_text()).items() if k not in TIMING_KEYS}
    if tool == "m2s-eval":
        predictions = sorted((out / "sequences").rglob("*.label"))
        result["predictions"] = [(p.relative_to(out).as_posix(), p.read_bytes()) for p in predictions]
    return result


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def run(command: list[str], timeout: float = 600) -> float:
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def trial(tool: str, command: list[str], out: Path, delay: float, reference: object) -> dict:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and process.poll() is None:
        children.update({c.pid: c for c in descendants(process.pid)})  # known before the kill
        time.sleep(0.02)
    finished_first = process.poll() is not None
    running_children = [c for c in children.values() if c.is_running()]
    process.kill()
    process.wait()
    _gone, alive = psutil.wait_procs(list(children.values()), timeout=5)
    orphans = [p.pid for p in alive]
    for p in alive:
        p.kill()
    after_kill = fingerprint(tool, out)
    looks_complete_but_differs = after_kill is not None and after_kill != reference
    hidden_temporaries = len([p for p in out.rglob(".*") if p.is_dir()]) if out.exists() else 0
    run(command)
    rerun_equal = fingerprint(tool, out) == reference
    return {"delay_s": round(delay, 2), "finished_before_kill": finished_first, "orphans": orphans,
            "children_running_at_kill": len(running_children),
            "partial_output_looks_complete": looks_complete_but_differs, "complete_after_kill": after_kill is not None,
            "hidden_temporaries_after_kill": hidden_temporaries, "rerun_equals_reference": rerun_equal}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help="kills per tool")
    parser.add_argument("--scans", type=int, default=20, help="scans in the synthetic sequence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    use_loopback_dds()
    rng = random.Random(args.seed)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from m2s_training.bag.kitti2bag import convert_sequence
        from m2s_training.synth import generate

        generate(root / "data", ["08"], preset="tiny", scans=args.scans, seed=1)
        convert_sequence(root / "data", "08", root / "input_bag", progress=False)
        for tool, command_for in tools(root / "data").items():
            reference_out = root / f"reference_{tool.replace(' ', '_')}"
            duration = run(command_for(reference_out))
            reference = fingerprint(tool, reference_out)
            results[tool] = []
            for k in range(args.trials):
                out = root / f"trial_{tool.replace(' ', '_')}_{k}"
                if k % 2 == 1:  # every other trial writes over an earlier complete run, as a user rerunning would
                    shutil.copytree(reference_out, out)
                delay = rng.uniform(0.0, 1.2 * duration)
                results[tool].append(trial(tool, command_for(out), out, delay, reference))
            print(f"{tool}: reference run {duration:.1f} s", flush=True)
    return report(results, args)


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> int:
    ok = True
    print(f"kill -9 at random moments, {args.trials} trials per tool (seed {args.seed}), then an uninterrupted rerun")
    print("| tool | killed mid-run | ... with a child (the node) running | orphans | partial output looking complete "
          "| rerun equals reference |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for tool, trials in results.items():
        mid = sum(not t["finished_before_kill"] for t in trials)
        orphans = sum(len(t["orphans"]) for t in trials)
        looks = sum(t["partial_output_looks_complete"] for t in trials)
        equal = sum(t["rerun_equals_reference"] for t in trials)
        with_child = sum(t["children_running_at_kill"] > 0 and not t["finished_before_kill"] for t in trials)
        ok &= orphans == 0 and looks == 0 and equal == len(trials)
        print(f"| {tool} | {mid} of {len(trials)} | {with_child} | {orphans} | {looks} | {equal} of {len(trials)} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
