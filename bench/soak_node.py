"""Soak the real ``m2s-segment`` process: many small scans, watching its memory and threads.

    PYTHONPATH=. .venv/bin/python bench/soak_node.py [--scans 10000] [--points 2000] [--checkpoint CKPT]

Scans go out one at a time (each after the previous one's labelled cloud arrived), so the node
labels every one. The node's RSS and thread count are sampled every ``--every`` scans; printed are
the samples, the growth from the first sample after warm-up (``--warmup`` scans) to the last, and a
least-squares slope over the samples after warm-up (MB per 1000 scans). Exit code 1 when a scan
goes unanswered, the node exits, RSS grows by 10 % or more, or the thread count grows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fuzz_harness import DEMO_WEIGHTS, serving, usage, valid_cloud, verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--scans", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_WEIGHTS)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    clouds = [valid_cloud(args.points, seed, 0) for seed in range(8)]  # a few scenes, reused
    samples: list[tuple[int, float, int]] = []
    unanswered = 0
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        with serving(Path(tmp), "m2s_soak", args.checkpoint) as (node, client, end):
            for k in range(1, args.scans + 1):
                msg = clouds[k % len(clouds)]
                msg.header.stamp.sec = k
                unanswered += not client.request(msg, timeout=30)
                client.answered.discard(k - 1)  # keep the client's own memory flat
                if not node.alive():
                    break
                if k >= args.warmup and (k - args.warmup) % args.every == 0:
                    samples.append((k, *usage(node)))
                    print(f"  scan {k:>6}: node RSS {samples[-1][1]:.1f} MB, {samples[-1][2]} threads", flush=True)
        alive = end["alive"]
        seconds = time.monotonic() - started
    scans = np.array([s[0] for s in samples], float)
    rss = np.array([s[1] for s in samples])
    slope = float(np.polyfit(scans / 1000, rss, 1)[0]) if len(samples) > 1 else float("nan")
    summary = {
        "scans": args.scans, "points": args.points, "unanswered": unanswered, "node_alive_at_end": alive,
        "seconds": round(seconds, 1), "samples": samples, "rss_growth": round(float(rss[-1] / rss[0] - 1), 4),
        "rss_slope_mb_per_1000_scans": round(slope, 3), "threads_first": samples[0][2], "threads_last": samples[-1][2],
    }  # fmt: skip
    checks = {
        "every scan answered": unanswered == 0,
        "node alive at the end": alive,
        "RSS growth < 10 %": summary["rss_growth"] < 0.10,
        "threads flat": summary["threads_last"] <= summary["threads_first"],
    }
    print(f"soak: {args.scans} scans of {args.points} points through m2s-segment in {summary['seconds']} s "
          f"({1000 * seconds / args.scans:.1f} ms per scan, lock-step)")  # fmt: skip
    print(f"  unanswered: {unanswered}")
    print(f"  node RSS {rss[0]:.1f} MB at scan {int(scans[0])} -> {rss[-1]:.1f} MB at scan {int(scans[-1])} "
          f"({100 * summary['rss_growth']:+.1f} %), slope {slope:+.3f} MB per 1000 scans")  # fmt: skip
    print(f"  threads {summary['threads_first']} -> {summary['threads_last']}")
    return verdict(checks, summary, args.json)


if __name__ == "__main__":
    sys.exit(main())
