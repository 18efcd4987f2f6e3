"""Mean ± std over seeds of the recipes that ``bench/real_recipes.sh`` trained and scored.

    .venv/bin/python -m bench.recipe_table --runs runs/real_recipes [--json bench/results/real_recipes.json]

Reads ``eval_<recipe>[_s<seed>]_{val,all}/metrics.json`` (seed 0 has no suffix), prints a Markdown
table: synthetic val mIoU and hard-class mIoU, real present-class mIoU and accuracy, and the share of
the teacher–student hard-class gap that each recipe recovers (teacher: seed 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RECIPES = ("student", "teacher", "distilled", "m2skd")
COLUMNS = (("val", "miou"), ("val", "hard_miou"), ("all", "present_miou"), ("all", "accuracy"))


def read_runs(runs: Path) -> dict[str, dict[int, dict[str, float]]]:
    """recipe -> seed -> {"val_miou": ..., "val_hard_miou": ..., "all_present_miou": ..., "all_accuracy": ...}."""
    table: dict[str, dict[int, dict[str, float]]] = {}
    for recipe in RECIPES:
        for seed in range(10):
            name = recipe if seed == 0 else f"{recipe}_s{seed}"
            paths = {split: runs / f"eval_{name}_{split}" / "metrics.json" for split in ("val", "all")}
            if not all(p.exists() for p in paths.values()):
                continue
            metrics = {split: json.loads(p.read_text()) for split, p in paths.items()}
            table.setdefault(recipe, {})[seed] = {f"{s}_{k}": float(metrics[s][k]) for s, k in COLUMNS}
    return table


def summarise(table: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, object]]:
    summary: dict[str, dict[str, object]] = {}
    for recipe, seeds in table.items():
        keys = next(iter(seeds.values())).keys()
        values = {k: np.array([seeds[s][k] for s in sorted(seeds)]) for k in keys}
        summary[recipe] = {
            "seeds": sorted(seeds),
            **{
                k: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
                for k, v in values.items()
            },
        }
    student, teacher = summary.get("student"), summary.get("teacher")
    if student and teacher:
        gap = teacher["val_hard_miou"]["mean"] - student["val_hard_miou"]["mean"]
        for recipe in summary:
            recovered = (summary[recipe]["val_hard_miou"]["mean"] - student["val_hard_miou"]["mean"]) / gap
            summary[recipe]["hard_gap_recovered"] = float(recovered)
    return summary


def markdown(summary: dict[str, dict[str, object]]) -> str:
    lines = [
        "| recipe | seeds | synthetic val mIoU | synthetic val hard mIoU | share of the hard gap | "
        "real present-class mIoU | real accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for recipe, row in summary.items():
        cells = [f"{row[f'{s}_{k}']['mean']:.4f} ± {row[f'{s}_{k}']['std']:.4f}" for s, k in COLUMNS]
        gap = f"{row['hard_gap_recovered'] * 100:.0f} %" if "hard_gap_recovered" in row else "—"
        seeds = ", ".join(map(str, row["seeds"]))
        lines.append(f"| {recipe} | {seeds} | {cells[0]} | {cells[1]} | {gap} | {cells[2]} | {cells[3]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/real_recipes"))
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    table = read_runs(args.runs)
    if not table:
        raise SystemExit(f"no scored recipes under {args.runs} (run bench/real_recipes.sh first)")
    summary = summarise(table)
    print(markdown(summary))
    if args.json:
        args.json.write_text(json.dumps({"per_seed": table, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
