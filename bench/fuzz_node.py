"""Fuzz the real ``m2s-segment`` process with seeded malformed PointCloud2 messages.

    PYTHONPATH=. .venv/bin/python bench/fuzz_node.py [--messages 1000] [--seed 0] [--checkpoint CKPT]

Each message breaks the PointCloud2 contract in 1-3 random ways: random field tables (names,
datatypes 0-255, offsets, counts, duplicate fields), point_step / row_step / width / height lies,
multi-million-point claims, truncated / padded / empty data, the big-endian flag, NaN / Inf / huge
values in an otherwise valid layout, absurd frame_ids. Messages go out one at a time, each after
the node has finished with the previous one (its ``/diagnostics`` counters account for it), so every
message is decoded rather than replaced by the next. A valid cloud is sent every 50 messages and
10 at the end: each must be answered. Printed: crashes (the node process exiting), valid clouds
answered, the node's verdicts (labelled / rejected by kind / internal errors), and its RSS and
thread count after warm-up vs at the end. Exit code 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import array
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fuzz_harness import DEMO_WEIGHTS, Client, serving, usage, valid_cloud, verdict
from sensor_msgs.msg import PointCloud2, PointField

NAMES = ["x", "y", "z", "intensity", "i", "remission", "reflectivity", "ring", "time", "t", "label", "rgb", "",
         "X", "x ", "\u00e9t\u00e9", "n" * 300]  # fmt: skip
SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}
U32 = 2**32 - 1


def _field(name: str, offset: int, datatype: int, count: int = 1) -> PointField:
    return PointField(name=name, offset=offset, datatype=datatype, count=count)


def _base(rng: np.random.Generator, points: int) -> PointCloud2:
    """A valid x, y, z, intensity cloud to break."""
    msg = valid_cloud(points, int(rng.integers(1 << 30)), 0)
    return msg


def mutate(rng: np.random.Generator, msg: PointCloud2) -> list[str]:
    """Break ``msg`` in 1-3 ways; returns what was done."""
    done = []
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(MUTATIONS))
        MUTATORS[kind](rng, msg)
        done.append(kind)
    # The lies must still be representable on the wire (uint32 sizes, uint8 datatypes).
    msg.width, msg.height, msg.point_step, msg.row_step = (
        int(np.clip(v, 0, U32)) for v in (msg.width, msg.height, msg.point_step, msg.row_step)
    )
    for field in msg.fields:
        field.offset, field.count = int(np.clip(field.offset, 0, U32)), int(np.clip(field.count, 0, U32))
    return done


def random_fields(rng, msg):
    fields, step = [], int(rng.integers(0, 64))
    for _ in range(int(rng.integers(0, 9))):
        datatype = int(rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 42, 255]))
        offset = int(rng.choice([rng.integers(0, step + 8), rng.integers(0, U32), U32]))
        count = int(rng.choice([0, 1, 1, 1, 3, U32]))
        fields.append(_field(str(rng.choice(NAMES)), offset, datatype, count))
    msg.fields, msg.point_step = fields, step


def datatype_swap(rng, msg):
    field = msg.fields[int(rng.integers(len(msg.fields)))] if msg.fields else None
    if field is not None:
        field.datatype = int(rng.integers(0, 256))


def offset_lie(rng, msg):
    if msg.fields:
        msg.fields[int(rng.integers(len(msg.fields)))].offset = int(rng.choice([msg.point_step - 1, 13, U32, 1 << 20]))


def duplicate_field(rng, msg):
    if msg.fields:
        f = msg.fields[int(rng.integers(len(msg.fields)))]
        msg.fields = [
            *msg.fields,
            _field(f.name, int(rng.integers(0, max(1, msg.point_step))), 8 if f.datatype == 7 else 7),
        ]


def drop_field(rng, msg):
    if msg.fields:
        del msg.fields[int(rng.integers(len(msg.fields)))]


def point_step_lie(rng, msg):
    msg.point_step = int(rng.choice([0, 1, 3, msg.point_step + 1, msg.point_step * 2, U32]))


def row_step_lie(rng, msg):
    msg.row_step = int(rng.choice([0, 1, msg.row_step - 1, msg.row_step * 2, U32]))


def size_lie(rng, msg):
    msg.width = int(rng.choice([0, 1, msg.width + 1, msg.width * 3, U32]))
    msg.height = int(rng.choice([1, 1, 0, 2, 7, 65535]))


def million_claim(rng, msg):
    msg.width = int(rng.choice([2_000_000, 5_000_000, 50_000_000]))
    msg.height = 1
    msg.row_step = msg.width * msg.point_step


def truncate(rng, msg):
    n = len(msg.data)
    msg.data = msg.data[: int(rng.integers(0, max(1, n)))]


def pad(rng, msg):
    msg.data = msg.data + array.array("B", rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes())


def empty(rng, msg):
    msg.data = array.array("B")


def random_bytes(rng, msg):
    msg.data = array.array("B", rng.integers(0, 256, len(msg.data), dtype=np.uint8).tobytes())


def big_endian(rng, msg):
    msg.is_bigendian = True


def bad_values(rng, msg):
    values = np.frombuffer(bytes(msg.data), dtype=np.uint8).copy()
    floats = values[: len(values) // 4 * 4].view(np.float32)
    choice = np.array([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, 0.0], np.float32)
    which = rng.random(len(floats)) < rng.choice([0.01, 0.5, 1.0])
    floats[which] = rng.choice(choice, int(which.sum()))
    msg.data = array.array("B", values.tobytes())


def organised(rng, msg):
    if msg.width % 2 == 0:
        msg.height, msg.width = 2, msg.width // 2
        msg.row_step = msg.width * msg.point_step + int(rng.choice([0, 0, 4]))


def frame_id(rng, msg):
    msg.header.frame_id = str(rng.choice(["", "/", "x" * 10_000, "\u96f7\u8fbe", f"frame_{rng.integers(1 << 40)}"]))


MUTATORS = {f.__name__: f for f in (
    random_fields, datatype_swap, offset_lie, duplicate_field, drop_field, point_step_lie, row_step_lie, size_lie,
    million_claim, truncate, pad, empty, random_bytes, big_endian, bad_values, organised, frame_id,
)}  # fmt: skip
MUTATIONS = sorted(MUTATORS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_WEIGHTS)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        with serving(Path(tmp), "m2s_fuzz", args.checkpoint) as (node, client, end):
            summary = fuzz(rng, args.messages, node, client)
        summary["node_alive_at_end"] = end["alive"]
        summary["seconds"] = round(time.monotonic() - started, 1)
        log = (Path(tmp) / "m2s_fuzz.log").read_text(errors="replace")
        summary["tracebacks_in_log"] = log.count("Traceback")
        marker = "internal error, scan skipped: "  # what the node logs (throttled) for an internal error
        failures = {line.split(marker, 1)[1][:200] for line in log.splitlines() if marker in line}
        summary["internal_error_messages"] = sorted(failures)
    return report(summary, args)


def fuzz(rng: np.random.Generator, messages: int, node, client: Client) -> dict:
    valid_sent = valid_answered = 0
    sec = 1
    # Every message sent, counted, so that the next goes out only once the node's counters account
    # for this many. Waiting for "more than before" is not enough: a labelled cloud can arrive before
    # the diagnostics that count it, and their late increment would then release the next message
    # while this one is still in the node (it would be dropped for the newer one, not decoded).
    sent = client.accounted()

    def settled() -> bool:
        return client.wait_until(lambda: client.accounted() >= sent or not node.alive(), 10.0)

    def probe() -> None:
        nonlocal valid_sent, valid_answered, sec, sent
        valid_sent += 1
        sent += 1
        valid_answered += client.request(valid_cloud(int(rng.integers(500, 3000)), sec, sec))
        settled()
        sec += 1

    for _ in range(20):  # warm-up: allocator pools, model, DDS buffers
        probe()
    rss0, threads0 = usage(node)
    kinds: dict[str, int] = {}
    unaccounted = 0
    for k in range(messages):
        msg = _base(rng, int(rng.integers(1, 4000)))
        for kind in mutate(rng, msg):
            kinds[kind] = kinds.get(kind, 0) + 1
        msg.header.stamp.sec = sec
        sec += 1
        sent += 1
        client.publisher.publish(msg)
        if not settled():
            unaccounted += 1
            sent = client.accounted()  # counted once; the next message is not blamed for it
        if not node.alive():
            break
        if (k + 1) % 50 == 0:
            probe()
    answered_before_final = valid_answered
    for _ in range(10):
        if node.alive():
            probe()
    rss1, threads1 = usage(node) if node.alive() else (float("nan"), -1)
    client.wait_until(lambda: False, 0.5)  # the last diagnostics
    counters = dict(client.counters)
    return {
        "messages": messages,
        "mutations": kinds,
        "unaccounted_messages": unaccounted,
        "valid_sent": valid_sent,
        "valid_answered": valid_answered,
        "final_valid_answered": valid_answered - answered_before_final,
        "node_counters": counters,
        "rss_mb_after_warmup": round(rss0, 1),
        "rss_mb_end": round(rss1, 1),
        "rss_growth": round(rss1 / rss0 - 1, 4),
        "threads_after_warmup": threads0,
        "threads_end": threads1,
    }


def report(s: dict, args: argparse.Namespace) -> int:
    counters = s["node_counters"]
    rejected = {k.removeprefix("rejected_"): v for k, v in counters.items() if k.startswith("rejected_")}
    checks = {
        "0 crashes (node alive at the end)": s["node_alive_at_end"],
        "valid clouds answered (all)": s["valid_answered"] == s["valid_sent"],
        "10 valid clouds answered after the fuzz": s["final_valid_answered"] == 10,
        "RSS growth < 10 %": s["rss_growth"] < 0.10,
        "threads flat": s["threads_end"] <= s["threads_after_warmup"],
    }
    print(f"fuzz: {s['messages']} malformed PointCloud2 (seed {args.seed}) against m2s-segment, {s['seconds']} s")
    print(f"  node verdicts: labelled {counters.get('scans_processed')}, rejected {counters.get('scans_rejected')} "
          f"{json.dumps(rejected)}, dropped {counters.get('scans_dropped')}")  # fmt: skip
    print(f"  messages the node did not account for within 10 s: {s['unaccounted_messages']}")
    print(f"  valid clouds answered: {s['valid_answered']} / {s['valid_sent']} (10 / 10 after the fuzz: "
          f"{s['final_valid_answered']})")  # fmt: skip
    print(f"  node RSS {s['rss_mb_after_warmup']} MB after warm-up -> {s['rss_mb_end']} MB at the end "
          f"({100 * s['rss_growth']:+.1f} %); threads {s['threads_after_warmup']} -> {s['threads_end']}")  # fmt: skip
    print(f"  tracebacks in the node log: {s['tracebacks_in_log']}")
    for text in s["internal_error_messages"]:
        print(f"  internal error logged by the node (scan skipped, node kept serving): {text}")
    return verdict(checks, s, args.json)


if __name__ == "__main__":
    sys.exit(main())
