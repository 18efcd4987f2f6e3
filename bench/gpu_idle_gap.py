"""Does the GPU slow down between scans? ``Segmenter.predict`` of the shipped ensemble on CUDA, back to
back and with an idle gap before each scan (the node's lock-step bench leaves ~35 ms), alternated twice.

    PYTHONPATH=. python3 bench/gpu_idle_gap.py --real .gpu_real [--gap-ms 35]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_backbones import read_scan
from m2s_perception.inference import Segmenter
from m2s_perception.resources import DEMO_CHECKPOINT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, required=True, help="every *.bin scan under this folder")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--gap-ms", type=float, default=35.0)
    parser.add_argument("--scans", type=int, default=40, help="timed scans per block")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    segmenter = Segmenter.from_checkpoint(args.checkpoint, args.device)
    sync = torch.cuda.synchronize if segmenter.device.type == "cuda" else lambda: None
    scans = [read_scan(path) for path in sorted(args.real.rglob("*.bin"))]
    for _ in range(5):
        segmenter.predict(scans[0])
    for gap in (0.0, args.gap_ms, 0.0, args.gap_ms):
        times = []
        for index in range(args.scans):
            time.sleep(gap / 1e3)
            start = time.perf_counter()
            segmenter.predict(scans[index % len(scans)])
            sync()
            times.append(1e3 * (time.perf_counter() - start))
        print(
            f"gap {gap:4.0f} ms before each scan: predict median {statistics.median(times):.2f} ms, "
            f"p95 {np.percentile(times, 95):.2f} ms"
        )


if __name__ == "__main__":
    main()
