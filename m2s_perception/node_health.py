"""The node's bookkeeping, free of ROS: the newest-scan slot, counters, warning throttle and the
OK / WARN / ERROR verdict that the node publishes on /diagnostics once per ``stats_period_s``."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OK, WARN, ERROR = 0, 1, 2
STAGES = ("decode", "inference", "encode", "publish", "total")
SUSTAINED_DELAY_S = 3.0  # max_delay_ms must hold this long before the verdict is ERROR
RATE_WINDOW_S = 5.0


class LatestScanSlot:
    """Holds at most one scan: putting a new one replaces (and counts) an unprocessed one."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._scan: Any = None
        self._closed = False
        self.dropped = 0

    def put(self, scan: Any) -> None:
        with self._condition:
            if self._scan is not None:
                self.dropped += 1
            self._scan = scan
            self._condition.notify()

    def take(self, timeout: float) -> Any:
        """The newest scan, or None after ``timeout`` seconds or once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._scan is not None or self._closed, timeout)
            scan, self._scan = self._scan, None
            return scan

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class WarningThrottle:
    """At most one message per problem kind per period. Kinds come from a fixed set chosen by the
    code, never from message text, so a sender varying frame ids or field names cannot grow memory
    or get past the throttle."""

    def __init__(self, kinds: tuple[str, ...], period_s: float):
        self.kinds, self.period_s = frozenset(kinds), period_s
        self._last: dict[str, float] = {}
        self._suppressed: Counter = Counter()

    def allow(self, kind: str, now: float | None = None) -> tuple[bool, int]:
        """(log it?, how many of this kind were suppressed since the last one logged)."""
        if kind not in self.kinds:
            raise ValueError(f"unknown problem kind {kind!r}")
        now = time.monotonic() if now is None else now
        if now - self._last.get(kind, -np.inf) >= self.period_s:
            self._last[kind] = now
            suppressed, self._suppressed[kind] = self._suppressed[kind], 0
            return True, suppressed
        self._suppressed[kind] += 1
        return False, 0


@dataclass
class Thresholds:
    max_processing_ms: float = 500.0  # WARN when the recent p95 of total processing time is above (0: off)
    max_delay_ms: float = 1000.0  # ERROR when every scan of the last SUSTAINED_DELAY_S is older than this (0: off)
    input_timeout_s: float = 5.0  # no scan for this long: ERROR once scans came, WARN while none ever did


@dataclass
class ScanStats:
    """Counters and recent latencies; written by the callbacks and the worker, read by the stats timer."""

    window: int = 200
    started: float = field(default_factory=time.monotonic)
    received: int = 0
    processed: int = 0
    skipped: int = 0  # nobody subscribed to any output: no inference
    internal_errors: int = 0
    last_error: str = ""
    rejected: Counter = field(default_factory=Counter)
    last_points: int = 0
    latencies_ms: dict[str, deque] = field(default_factory=dict)
    arrivals: deque = field(default_factory=lambda: deque(maxlen=1000))  # monotonic receive times
    delays: deque = field(default_factory=lambda: deque(maxlen=1000))  # (monotonic time, now - header.stamp ms)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arrived(self) -> None:
        with self.lock:
            self.received += 1
            self.arrivals.append(time.monotonic())

    def record(self, timings_ms: dict[str, float], num_points: int) -> None:
        with self.lock:
            self.processed += 1
            self.last_points = num_points
            for stage, value in timings_ms.items():
                self.latencies_ms.setdefault(stage, deque(maxlen=self.window)).append(value)
            if "pipeline" in timings_ms:
                self.delays.append((time.monotonic(), timings_ms["pipeline"]))

    def count(self, what: str, kind: str = "", error: str = "") -> None:
        with self.lock:
            if what == "rejected":
                self.rejected[kind] += 1
            elif what == "internal_error":
                self.internal_errors += 1
                self.last_error = error
            elif what == "skipped":
                self.skipped += 1

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """Per stage (p50, p95) in ms over the recent window."""
        with self.lock:
            recent = {stage: np.asarray(values) for stage, values in self.latencies_ms.items() if values}
        return {stage: (float(np.percentile(v, 50)), float(np.percentile(v, 95))) for stage, v in recent.items()}


@dataclass
class Verdict:
    level: int
    message: str
    values: dict[str, str]
    summary: str  # counts since the previous report, for the log line


class HealthReport:
    """Turns ScanStats into one verdict per period, comparing counters with the previous period."""

    def __init__(self, stats: ScanStats, slot: LatestScanSlot, thresholds: Thresholds):
        self.stats, self.slot, self.thresholds = stats, slot, thresholds
        self._previous = Counter()

    def assess(self, input_topic: str, publishers: str, now: float | None = None) -> Verdict:
        """``publishers``: who publishes ``input_topic`` and with which QoS (for the no-input message)."""
        now = time.monotonic() if now is None else now
        s, t = self.stats, self.thresholds
        with s.lock:
            totals = Counter(
                received=s.received,
                processed=s.processed,
                skipped=s.skipped,
                internal_errors=s.internal_errors,
                rejected=sum(s.rejected.values()),
                dropped=self.slot.dropped,
            )
            rejected_kinds, last_error, last_points = dict(s.rejected), s.last_error, s.last_points
            last_arrival = s.arrivals[-1] if s.arrivals else None
            rate = sum(1 for a in s.arrivals if a > now - RATE_WINDOW_S) / min(
                RATE_WINDOW_S, max(now - s.started, 1e-3)
            )
            recent_delays = [d for stamp, d in s.delays if stamp > now - SUSTAINED_DELAY_S]
            oldest_delay = s.delays[0][0] if s.delays else now
        new = Counter({k: totals[k] - self._previous[k] for k in totals})
        self._previous = totals
        percentiles = self.stats.percentiles()
        summary = (
            f"{new['processed']} scans labelled, {new['dropped']} dropped, {new['rejected']} rejected, "
            f"{new['skipped']} skipped (no subscriber), {new['internal_errors']} internal errors since last report"
        )

        silent_for = now - (last_arrival if last_arrival is not None else s.started)
        p95_total = percentiles.get("total", (0.0, 0.0))[1]
        if new["internal_errors"]:
            level, message = ERROR, f"{new['internal_errors']} internal error(s), last: {last_error}"
        elif silent_for > t.input_timeout_s:
            level = ERROR if last_arrival is not None else WARN
            what = "no scans" if last_arrival is not None else "no scan yet"
            message = f"{what} on {input_topic} for {silent_for:.1f} s; publishers: {publishers or 'none'}"
        elif (
            t.max_delay_ms > 0
            and recent_delays
            and now - oldest_delay >= SUSTAINED_DELAY_S
            and min(recent_delays) > t.max_delay_ms
        ):
            level = ERROR
            message = f"every scan of the last {SUSTAINED_DELAY_S:g} s is over max_delay_ms={t.max_delay_ms:g} old"
        elif t.max_processing_ms > 0 and p95_total > t.max_processing_ms:
            level, message = WARN, f"processing p95 {p95_total:.0f} ms over max_processing_ms={t.max_processing_ms:g}"
        elif new["rejected"]:
            level, message = WARN, f"{new['rejected']} scan(s) rejected (bad input)"
        elif new["dropped"]:
            level, message = WARN, f"{new['dropped']} scan(s) dropped (inference slower than the sensor)"
        elif new["skipped"] and not new["processed"]:
            level, message = OK, f"idle: no subscriber to any output ({new['skipped']} scans not segmented)"
        else:
            level, message = OK, f"{rate:.1f} Hz in, {new['processed']} scans labelled"

        values = {
            "scans_received": totals["received"],
            "scans_processed": totals["processed"],
            "scans_dropped": totals["dropped"],
            "scans_rejected": totals["rejected"],
            "scans_skipped_no_subscribers": totals["skipped"],
            "internal_errors": totals["internal_errors"],
            "input_rate_hz": f"{rate:.2f}",
            "last_points": last_points,
            **{f"rejected_{kind}": count for kind, count in sorted(rejected_kinds.items())},
        }
        for stage, (p50, p95) in percentiles.items():
            values[f"{stage}_ms_p50"] = f"{p50:.2f}"
            values[f"{stage}_ms_p95"] = f"{p95:.2f}"
        return Verdict(level, message, {key: str(value) for key, value in values.items()}, summary)
