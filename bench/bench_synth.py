"""Throughput of the synthetic generator: scans per second, simulation alone and with file writes.

Usage: python bench/bench_synth.py [--preset hdl64] [--scans 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from m2s_training.synth import SequenceSimulator, get_preset, write_sequence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="hdl64")
    parser.add_argument("--scans", type=int, default=20)
    args = parser.parse_args()
    preset = get_preset(args.preset)

    start = time.perf_counter()
    sim = SequenceSimulator(preset, args.scans, seed=0, sequence="00")
    build = time.perf_counter() - start
    world = sim.world
    print(f"world: {world.static.num_triangles:,} static triangles, {len(world.movers)} movers, built in {build:.2f} s")

    times, points = [], []
    for index in range(len(sim)):
        start = time.perf_counter()
        points.append(len(sim.scan(index).points))
        times.append(time.perf_counter() - start)
    scan_s = float(np.median(times))
    print(f"simulate only: median {scan_s * 1e3:.0f} ms/scan -> {1 / scan_s:.1f} scans/s")
    print(f"points/scan: mean {np.mean(points):,.0f}, min {min(points):,}, max {max(points):,}")

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        write_sequence(out, "00", preset, args.scans, seed=0)
        total = time.perf_counter() - start
    rate = args.scans / total
    print(f"end to end (world + scans + files): {args.scans} scans in {total:.1f} s -> {rate:.1f} scans/s")
    print(f"target for the default preset, >= 2 scans/s: {'met' if rate >= 2 else 'NOT met'} ({rate / 2:.1f}x)")


if __name__ == "__main__":
    main()
