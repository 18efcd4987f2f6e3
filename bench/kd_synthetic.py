"""Multi-to-single distillation on synthetic data: multi-scan teacher, baseline and distilled student.

For each seed, with the same data, step budget and seed:

- teacher: ``config/teacher_polar_synthetic.yaml`` (full width, M2SKD fused multi-scan input);
- student: ``config/distill_polar_synthetic.yaml`` in ``student`` mode (half width, single scans);
- distilled: the same config in ``distill`` mode with that seed's teacher (all six KD terms);
- m2skd: ``config/m2skd_polar_synthetic.yaml``, the official M2SKD recipe: no separate teacher, the
  student's own weights see the fused scan too (``m2s_training.m2skd``), same width and budget;
- pvkd teacher / pvkd: PVKD's terms only (point and voxel logit KD, inter-point and inter-voxel
  affinity in difficulty-sampled supervoxels; no feature or instance term, no ramp, no class weights
  on the KL) from a teacher with a point branch into a student with one (``model.point_branch``);
  "student pb" is that student trained alone, so the branch's own gain is not credited to the KD.

Every final checkpoint (``last.pt``: fixed budget, no model selection on the evaluation scans) is
scored on the validation sequence through ``m2s_training.evaluate.evaluate`` (single-scan input,
the node's code path). The teacher is also scored on its own fused multi-scan input. Prints
per-class IoU, mIoU and hard-class mIoU (mean ± std over seeds) and writes ``OUT/kd_synthetic.json``.

To fit a shared 2-core CPU (~15 min for two seeds) the configs' grid and widths are shrunk
(``--grid``, ``--steps``); the configs themselves hold the full synthetic settings::

    nice -n 10 .venv/bin/python bench/kd_synthetic.py --out runs/kd_synthetic
    nice -n 10 .venv/bin/python bench/kd_synthetic.py --out runs/kd_full --steps 600 --grid 240 180 16 --full-width

A finished run in ``OUT/seedN/MODEL`` (its ``last.pt``) is reused, not retrained; an ablation can
link the teacher and student runs of another output folder and change only the distillation::

    nice -n 10 .venv/bin/python bench/kd_synthetic.py --out runs/kd_logit_only \
        --distill feature=0 instance_affinity=0 point_affinity=0 voxel_affinity=0

``--teacher-steps`` gives the teacher a larger budget than the students (a stronger teacher; the
students keep ``--steps``), e.g. ``--steps 600 --teacher-steps 2000``. ``--student-width 1`` gives the
students the teacher's width, as in M2SKD, where only the input differs: multi-to-single transfer
without compression. ``--fused-weight W`` weighs the fused points' labels in the teacher's
cross-entropy (0: input only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from m2s_perception.inference import Segmenter
from m2s_perception.labels import load_label_map
from m2s_training.atomic import write_text_atomic
from m2s_training.config import TrainConfig, load_config, override, parse_overrides
from m2s_training.data.semantic_kitti import Sequence
from m2s_training.evaluate import evaluate
from m2s_training.fusion import MultiScanFuser
from m2s_training.metrics import SegmentationMetrics, confusion_matrix
from m2s_training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parent.parent / "config"
TEACHER_CONFIG = CONFIGS / "teacher_polar_synthetic.yaml"
STUDENT_CONFIG = CONFIGS / "distill_polar_synthetic.yaml"
M2SKD_CONFIG = CONFIGS / "m2skd_polar_synthetic.yaml"
TRAIN_SEQUENCES, VAL_SEQUENCE = ["00", "01"], "08"
MODELS = ("teacher", "student", "distilled", "m2skd", "pvkd teacher", "student pb", "pvkd")
PVKD = {"model.point_branch": True, "distill.feature": 0.0, "distill.instance_affinity": 0.0}
PVKD |= {"distill.ramp_steps": 0, "distill.class_weighted_logits": False}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/kd_synthetic"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=80, help="optimisation steps per model")
    parser.add_argument(
        "--teacher-steps",
        type=int,
        default=None,
        help="the teacher's steps (default: --steps): a teacher trained longer",
    )
    parser.add_argument("--train-scans", type=int, default=40, help="scans per training sequence (00, 01)")
    parser.add_argument("--val-scans", type=int, default=20, help="scans of the validation sequence (08)")
    parser.add_argument("--grid", type=int, nargs=3, default=[48, 48, 8], help="rho, phi, z bins")
    parser.add_argument("--full-width", action="store_true", help="keep the configs' channel widths")
    parser.add_argument(
        "--student-width", type=float, default=None, help="the students' width factor (default: the config's 0.5)"
    )
    parser.add_argument(
        "--fused-weight", type=float, default=None, help="the teacher's loss.fused_weight (default: the config's)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="data loader workers per run (0: in the main process)")
    parser.add_argument(
        "--distill",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override distill: settings, e.g. --distill feature=0 instance_affinity=0 (ablations)",
    )
    return parser.parse_args()


def bench_config(
    path: Path, args: argparse.Namespace, seed: int, steps: int, width: float | None = None
) -> TrainConfig:
    """The YAML config with the bench's budget: grid, widths, steps, one validation at the end."""
    values = {"model.grid_size": list(args.grid)}
    if width is not None:
        values["model.width"] = width
    if not args.full_width:
        values |= {"model.point_channels": [32, 64], "model.base_channels": 16, "model.levels": 3}
    # The trainer's own end-of-run validation only feeds its log; the bench scores every scan itself.
    values |= {"data.num_workers": args.workers, "data.max_val_scans": 2}
    values |= {"train.epochs": 10_000, "train.max_steps": steps, "train.val_every": steps}  # max_steps: the budget
    values |= {"train.checkpoint_every": steps, "train.seed": seed}
    values |= {f"distill.{key}": value for key, value in parse_overrides(args.distill).items()}
    config = load_config(path, values)
    return override(config, {"optim.warmup_steps": min(config.optim.warmup_steps, steps // 8)})


def train(config: TrainConfig, data: Path, out: Path, mode: str, device: str, teacher: Path | None = None) -> dict:
    """Train (or reuse a finished run in ``out``); return the checkpoint path and minutes spent."""
    checkpoint = out / "last.pt"
    if checkpoint.exists():
        print(f"reusing {checkpoint}")
        return {"checkpoint": checkpoint, "minutes": None}
    started = time.monotonic()
    config = override(config, {"train.mode": mode, "train.teacher": str(teacher) if teacher else None})
    Trainer(config, data, out, device).fit()
    return {"checkpoint": checkpoint, "minutes": round((time.monotonic() - started) / 60, 2)}


def evaluate_fused(checkpoint: Path, data: Path, fuser: MultiScanFuser, device: str) -> SegmentationMetrics:
    """Score a teacher on its multi-scan input: fused points go in, only the scan's own are scored."""
    label_map = load_label_map()
    segmenter = Segmenter.from_checkpoint(checkpoint, device)
    sequence = Sequence(data, VAL_SEQUENCE)
    confusion = torch.zeros(label_map.num_classes, label_map.num_classes, dtype=torch.int64)
    for index in range(len(sequence)):
        frame = sequence.frame(index)
        fused = fuser.fuse(sequence, index)
        labels = segmenter.predict(np.concatenate([frame.points, fused.points])).labels[: len(frame.points)]
        target = label_map.to_train(frame.semantic)
        confusion += confusion_matrix(torch.from_numpy(labels), torch.from_numpy(target), label_map.num_classes)
    return SegmentationMetrics.from_confusion(confusion, label_map.hard_class_ids())


def summarise(metrics: dict) -> dict:
    """The figures kept per run; 'present' means classes that occur in the validation labels."""
    confusion = np.asarray(metrics["confusion"])
    names = list(metrics["iou"])
    present = [name for c, name in enumerate(names, start=1) if confusion[c].sum() > 0]
    hard_present = [name for name in metrics["hard_classes"] if name in present]
    return {
        "miou": metrics["miou"],
        "hard_miou": metrics["hard_miou"],
        "miou_present": float(np.mean([metrics["iou"][n] for n in present])),
        "hard_miou_present": float(np.mean([metrics["iou"][n] for n in hard_present])),
        "iou": metrics["iou"],
        "present_classes": present,
    }


def run(args: argparse.Namespace) -> dict:
    data = args.out / "data"
    if not (data / "sequences" / VAL_SEQUENCE).is_dir():  # generated once, then reused (also where open3d is absent)
        from m2s_training.synth import generate

        generate(data, TRAIN_SEQUENCES, preset="tiny", scans=args.train_scans, seed=0)
        generate(data, [VAL_SEQUENCE], preset="tiny", scans=args.val_scans, seed=0)
    results: dict[str, dict[int, dict]] = {name: {} for name in (*MODELS, "teacher_fused_input")}
    for seed in args.seeds:
        runs = args.out / f"seed{seed}"
        teacher_config = bench_config(TEACHER_CONFIG, args, seed, args.teacher_steps or args.steps)
        if args.fused_weight is not None:
            teacher_config = override(teacher_config, {"loss.fused_weight": args.fused_weight})
        student_config = bench_config(STUDENT_CONFIG, args, seed, args.steps, args.student_width)
        trained = {"teacher": train(teacher_config, data, runs / "teacher", "teacher", args.device)}
        trained["student"] = train(student_config, data, runs / "student", "student", args.device)
        trained["distilled"] = train(
            student_config, data, runs / "distilled", "distill", args.device, trained["teacher"]["checkpoint"]
        )
        m2skd_config = bench_config(M2SKD_CONFIG, args, seed, args.steps, args.student_width)
        trained["m2skd"] = train(m2skd_config, data, runs / "m2skd", "m2skd", args.device)
        pvkd_teacher = override(teacher_config, {"model.point_branch": True})
        trained["pvkd teacher"] = train(pvkd_teacher, data, runs / "pvkd_teacher", "teacher", args.device)
        # the point branch alone, no distillation: what the branch itself is worth to the student
        student_pb = override(student_config, {"model.point_branch": True})
        trained["student pb"] = train(student_pb, data, runs / "student_pb", "student", args.device)
        trained["pvkd"] = train(
            override(student_config, PVKD), data, runs / "pvkd", "distill", args.device,
            trained["pvkd teacher"]["checkpoint"],
        )  # fmt: skip
        for name, info in trained.items():
            eval_dir = runs / name.replace(" ", "_") / "eval"
            metrics = evaluate(info["checkpoint"], data, "val", eval_dir, args.device)
            results[name][seed] = {**summarise(metrics), "train_minutes": info["minutes"]}
        fuser = MultiScanFuser(**vars(teacher_config.fusion))
        fused = evaluate_fused(trained["teacher"]["checkpoint"], data, fuser, args.device)
        results["teacher_fused_input"][seed] = summarise(fused.to_dict(load_label_map()))
        write_text_atomic(args.out / "kd_synthetic.partial.json", json.dumps(results, indent=1) + "\n")
    return results


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(results: dict) -> str:
    columns = list(results)
    first = next(iter(results[columns[0]].values()))
    lines = [f"| class | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    for name in first["present_classes"]:
        cells = [mean_std([r["iou"][name] for r in results[c].values()]) for c in columns]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    for key, label in [
        ("miou_present", "mIoU (classes in val)"),
        ("hard_miou_present", "hard mIoU (hard classes in val)"),
        ("miou", "mIoU (official, 19 classes)"),
        ("hard_miou", "hard mIoU (all 10 hard classes)"),
    ]:
        cells = [mean_std([r[key] for r in results[c].values()]) for c in columns]
        lines.append(f"| **{label}** | {' | '.join(cells)} |")
    per_seed = [
        f"| {key} seed {seed} | " + " | ".join(f"{results[c][seed][key]:.3f}" for c in columns) + " |"
        for key in ("miou_present", "hard_miou_present")
        for seed in results[columns[0]]
    ]
    return "\n".join(lines + per_seed)


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    results = run(args)
    report = table(results)
    print(report)
    minutes = round((time.monotonic() - started) / 60, 1)
    print(f"total {minutes} min")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_text_atomic(
        args.out / "kd_synthetic.json",
        json.dumps({"settings": settings, "minutes": minutes, "results": results, "table": report}, indent=1) + "\n",
    )


if __name__ == "__main__":
    main()
