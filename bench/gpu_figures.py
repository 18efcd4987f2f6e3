"""GPU figures in one run: what a lent GPU is needed for, printed as Markdown tables.

    python bench/gpu_figures.py [--real DIR] [--repeats 50] [--out DIR]

1. ``Segmenter.predict`` latency (numpy in, labels out: binning, host→device copy, network, labels
   back) per model and precision, on a synthetic 120k-point HDL-64-like scan and on every real scan
   under ``--real``; median and p95 of ``--repeats`` runs after warm-up, the device synchronised.
2. Label agreement of CUDA fp16 / fp32 with the CPU float32 path on the same scans (share of points).
3. One training step (forward, CE + Lovász, backward, AdamW; AMP) per model and batch size, and
   the M2SKD joint step (student on the single scan + the same weights on a fused scan, official terms).
4. ONNX Runtime with its CUDA / TensorRT providers where that build is installed; else says so.
5. Where a scan's time goes (``--skip stages`` to leave out): ``Segmenter.prepare`` alone (the CPU work
   before the network: surface texture where the model eats one, ground levelling) and ``predict``
   with levelling on and off, fp32, the checkpoint's networks.

Models: the shipped demo (all its networks, then its first k: the node's ``ensemble_members``), and
random polar teacher / student at the full 480 × 360 × 32 grid (``config/model_polar.yaml``, widths
1.0 / 0.5): latency does not depend on the weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_backbones import read_scan, synthetic_scan
from m2s_perception.inference import Segmenter
from m2s_perception.models import ModelConfig, build_model
from m2s_perception.models.ensemble import first_members
from m2s_perception.resources import DEMO_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]


def timed(run, repeats: int, device: torch.device) -> tuple[float, float]:
    """(median, p95) milliseconds of ``run()`` after two warm-up calls, the device synchronised."""
    for _ in range(2):
        run()
    times = []
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda _device: None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), float(np.percentile(times, 95))


def models(checkpoint: Path = DEMO_CHECKPOINT) -> dict[str, tuple[torch.nn.Module, ModelConfig]]:
    found = {}
    demo = Segmenter.from_checkpoint(checkpoint, "cpu")
    count = demo.config.members
    found[f"{checkpoint.stem}, {count} network{'s' if count > 1 else ''}"] = (demo.model, demo.config)
    for members in range(count - 1, 0, -1):  # the node's ensemble_members: fewer, faster
        found[f"{checkpoint.stem}, first {members} of {count}"] = first_members(demo.model, members)
    for name, width in (("polar teacher 480x360x32", 1.0), ("polar student 480x360x32", 0.5)):
        config = ModelConfig.from_yaml(REPO / "config/model_polar.yaml")
        config.width = width
        torch.manual_seed(0)
        found[name] = (build_model(config).eval(), config)
    return found


def inference_table(
    scans: dict[str, np.ndarray], repeats: int, device: torch.device, results: dict, checkpoint: Path
) -> None:
    print("\n### Segmenter.predict on", device_name(device))
    print("| model | scan | points | precision | median ms | p95 ms | labels = CPU fp32 |")
    print("|---|---|---|---|---|---|---|")
    for model_name, (model, config) in models(checkpoint).items():
        cpu = Segmenter(copy.deepcopy(model), config, "cpu")
        engines = {p: Segmenter(copy.deepcopy(model), config, device, fp16=p == "fp16") for p in ("fp16", "fp32")}
        for scan_name, cloud in scans.items():
            reference = cpu.predict(cloud).labels
            for precision, engine in engines.items():
                median, p95 = timed(lambda e=engine, c=cloud: e.predict(c), repeats, device)
                agree = 100 * float(np.mean(engine.predict(cloud).labels == reference))
                row = f"| {model_name} | {scan_name} | {len(cloud)} | {precision} | {median:.2f} | {p95:.2f} |"
                print(f"{row} {agree:.3f} % |")
                results["inference"].append(
                    dict(
                        model=model_name, scan=scan_name, precision=precision, median_ms=median, p95_ms=p95, agree=agree
                    )
                )


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def train_step_table(repeats: int, batches: list[int], device: torch.device, results: dict) -> None:
    print("\n### Training step (AMP, CE + Lovász, AdamW), synthetic 120k-point scans with random labels")
    print("| model | batch | step | median ms | p95 ms | peak GPU memory |")
    print("|---|---|---|---|---|---|")
    for name, width in (("polar teacher 480x360x32", 1.0), ("polar student 480x360x32", 0.5)):
        for batch in batches:
            # the joint step runs the model twice on the batch: 4 scans is its size on one GPU
            for step_name in ("student", "m2skd joint") if batch <= 4 else ("student",):
                median, p95, peak = time_train_step(width, batch, step_name == "m2skd joint", repeats, device)
                print(f"| {name} | {batch} | {step_name} | {median:.1f} | {p95:.1f} | {peak:.1f} GiB |", flush=True)
                results["train"].append(dict(model=name, batch=batch, step=step_name, median_ms=median, p95_ms=p95))


def time_train_step(width: float, batch: int, joint: bool, repeats: int, device: torch.device) -> tuple:
    """(median ms, p95 ms, peak GiB) of one optimiser step; ``joint``: M2SKD's shared-weight step."""
    from m2s_training.data.dataset import Batch
    from m2s_training.losses import SegmentationLoss
    from m2s_training.m2skd import JointM2skd

    config = ModelConfig.from_yaml(REPO / "config/model_polar.yaml")
    config.width = width
    torch.manual_seed(0)
    model = build_model(config).to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = SegmentationLoss(torch.ones(config.num_classes)).to(device)
    teacher_view = JointM2skd(model, config.num_classes)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    points = torch.from_numpy(np.concatenate([synthetic_scan(120_000, seed) for seed in range(batch)])).to(device)
    index = torch.repeat_interleave(torch.arange(batch), 120_000).to(device)
    labels = torch.randint(0, config.num_classes, (len(points),), generator=torch.Generator().manual_seed(0)).to(device)
    extra = points[::20] + 0.05  # the fused view: 5 % more points, as fused hard-class instances
    fused = Batch(
        points=torch.cat([points, extra]),
        labels=torch.cat([labels, labels[::20]]),
        instance=torch.zeros(len(points) + len(extra), dtype=torch.long, device=device),
        is_fused=torch.arange(len(points) + len(extra), device=device) >= len(points),
        batch_index=torch.cat([index, index[::20]]),
        batch_size=batch,
    )

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.float16, enabled=cuda):
            output = model(points, index, batch)  # the student view: the scan alone
            terms = loss_fn(output.point_logits, labels)
            if joint:
                terms.update(teacher_view(fused, output))
            loss = sum(terms.values())
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    median, p95 = timed(step, max(1, repeats // 5), device)
    return median, p95, torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")


def onnxruntime_table(
    scans: dict[str, np.ndarray], repeats: int, device: torch.device, results: dict, checkpoint: Path
) -> None:
    try:
        import onnxruntime
    except ImportError:
        print("\nONNX Runtime: not installed here")
        return
    providers = onnxruntime.get_available_providers()
    print(f"\nONNX Runtime {onnxruntime.__version__}, providers {providers}")
    if "CUDAExecutionProvider" not in providers:
        print("ONNX Runtime on GPU: not measured (this build has no CUDA provider)")
        return
    demo = Segmenter.from_checkpoint(checkpoint, "cpu")
    model, config = demo.model, demo.config
    cpu = Segmenter(copy.deepcopy(model), config, "cpu")
    engine = Segmenter(copy.deepcopy(model), config, device, backend="onnxruntime")
    print("| scan | median ms | p95 ms | labels = CPU fp32 |")
    print("|---|---|---|---|")
    for scan_name, cloud in scans.items():
        median, p95 = timed(lambda c=cloud: engine.predict(c), repeats, device)
        agree = 100 * float(np.mean(engine.predict(cloud).labels == cpu.predict(cloud).labels))
        print(f"| {scan_name} | {median:.2f} | {p95:.2f} | {agree:.3f} % |")
        results["onnxruntime"].append(dict(scan=scan_name, median_ms=median, p95_ms=p95, agree=agree))


def stages_table(
    scans: dict[str, np.ndarray], repeats: int, device: torch.device, results: dict, checkpoint: Path
) -> None:
    demo = Segmenter.from_checkpoint(checkpoint, "cpu")
    model, config = demo.model, demo.config
    levelled, unlevelled = (
        Segmenter(copy.deepcopy(model), config, device, fp16=False, level_ground=level) for level in (True, False)
    )
    networks = f"{config.members} network{'s' if config.members > 1 else ''}, fp32"
    print(f"\n### Where the time goes: {checkpoint.stem} ({networks}) on", device_name(device))
    print("| scan | prepare (CPU) median ms | predict median ms | predict, not levelled, median ms |")
    print("|---|---|---|---|")
    for scan_name, cloud in scans.items():
        prepare = timed(lambda c=cloud: levelled.prepare(c), repeats, torch.device("cpu"))[0]
        whole = timed(lambda c=cloud: levelled.predict(c), repeats, device)[0]
        bare = timed(lambda c=cloud: unlevelled.predict(c), repeats, device)[0]
        print(f"| {scan_name} | {prepare:.2f} | {whole:.2f} | {bare:.2f} |")
        results["stages"].append(dict(scan=scan_name, prepare_ms=prepare, predict_ms=whole, unlevelled_ms=bare))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, help="every *.bin scan under this folder is also timed (evaluation only)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT, help="the demo rows' weights")
    parser.add_argument("--device", default="cuda", help="cuda (cpu: a quick check that the script runs)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8], help="training batch sizes")
    parser.add_argument("--skip", nargs="*", default=[], choices=["inference", "train", "onnxruntime", "stages"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_figures: no CUDA device here")
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {device_name(device)}, {torch.get_num_threads()} CPU threads")
    scans = {"synthetic HDL-64-like": synthetic_scan(120_000)}
    for path in sorted(args.real.rglob("*.bin")) if args.real else []:
        scans[path.name[:24]] = read_scan(path)
    results: dict = {
        "checkpoint": str(args.checkpoint),
        "device": device_name(device),
        "inference": [],
        "train": [],
        "onnxruntime": [],
        "stages": [],
    }
    if "inference" not in args.skip:
        inference_table(scans, args.repeats, device, results, args.checkpoint)
    if "stages" not in args.skip:
        stages_table(scans, args.repeats, device, results, args.checkpoint)
    if "onnxruntime" not in args.skip:
        onnxruntime_table(scans, args.repeats, device, results, args.checkpoint)
    if "train" not in args.skip:
        train_step_table(args.repeats, args.batches, device, results)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_figures.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
