"""``m2s-segment``: the ROS 2 node that labels a LiDAR's PointCloud2 with an m2s model.

    m2s-segment --ros-args --params-file config/segment.yaml [-p checkpoint:=model.pt]

Threads: the executor runs the callbacks; the subscription only stores the newest scan and the
stats timer publishes /diagnostics. One worker thread takes the newest scan, segments it and
publishes the labelled cloud. A scan arriving while another still waits replaces it and is counted
as dropped, so latency never grows behind a queue when the model is slower than the sensor.

Output: the input's points, count and order (organised clouds keep height × width), header
copied, with fields x, y, z, intensity (as received), ``rgb`` (float32-packed 0x00RRGGBB class
colour, for RViz's RGB8 transformer), optional ``confidence`` and ``label`` (uint16 training id,
or raw SemanticKITTI id with ``label_format: raw``). Points that are not finite or lie outside
[min_range, max_range] are not fed to the model and get label 0 (unlabeled).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField

from m2s_perception.labels import IGNORE_ID, LabelMap, load_label_map
from m2s_perception.pointcloud2 import CloudFormatError, decode_cloud, make_cloud
from m2s_perception.resources import DEMO_CHECKPOINT

STAGES = ("decode", "inference", "encode", "publish", "total")
WARNING_PERIOD_S = 5.0  # one warning per problem kind per period
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
LABEL_FORMATS = ("train", "raw")
PRECISIONS = {"auto": None, "fp16": True, "fp32": False}


class ScanRejected(Exception):
    """A scan the node cannot label; ``kind`` is a short counter key, the message says why."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class LabelSettings:
    """The parameters that shape how one scan is labelled (may change while the node runs)."""

    intensity_scale: float = 1.0
    min_range: float = 0.0
    max_range: float = 200.0
    max_points: int = 500_000
    label_format: str = "train"
    publish_confidence: bool = False


@dataclass
class LabelledScan:
    cloud: Any  # the output PointCloud2
    timings_ms: dict[str, float]  # decode, inference, encode
    intensity_warning: str | None = None


class ScanLabeller:
    """Input PointCloud2 → decode → points the model may see → predict → output PointCloud2.

    No ROS node inside: give it the message classes (rclpy's or rosbags') the output should use.
    """

    def __init__(self, segmenter: Any, label_map: LabelMap, cloud_type: type, field_type: type):
        self.segmenter = segmenter
        self.cloud_type, self.field_type = cloud_type, field_type
        rgb = label_map.train_rgb.astype(np.uint32)
        self.rgb_by_train_id = ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)
        self.raw_by_train_id = label_map.train_to_raw_lut.astype(np.uint16)

    def label(self, msg: Any, settings: LabelSettings) -> LabelledScan:
        start = time.perf_counter()
        num_points = int(msg.width) * int(msg.height)
        if num_points > settings.max_points:
            raise ScanRejected(
                "too_large", f"cloud has {num_points} points, more than max_points={settings.max_points}"
            )
        try:
            cloud = decode_cloud(msg, settings.intensity_scale)
        except CloudFormatError as err:
            raise ScanRejected("bad_format", f"malformed PointCloud2: {err}") from None
        if cloud.num_points == 0:
            raise ScanRejected("empty", "cloud has no points (width × height = 0)")
        if not cloud.finite.any():
            raise ScanRejected("no_finite_points", f"all {cloud.num_points} points are NaN or infinite")
        distance = np.linalg.norm(cloud.points[:, :3], axis=1)
        with np.errstate(invalid="ignore"):
            selected = cloud.finite & (distance >= settings.min_range) & (distance <= settings.max_range)
        decoded = time.perf_counter()

        train_ids = np.full(cloud.num_points, IGNORE_ID, dtype=np.uint8)
        confidence = np.zeros(cloud.num_points, dtype=np.float32)
        if selected.any():
            prediction = self.segmenter.predict(cloud.points[selected])
            train_ids[selected] = prediction.labels
            confidence[selected] = prediction.confidence
        predicted = time.perf_counter()

        columns = {
            "x": cloud.points[:, 0],
            "y": cloud.points[:, 1],
            "z": cloud.points[:, 2],
            "intensity": cloud.points[:, 3] * np.float32(settings.intensity_scale),  # back to the sensor's units
            "rgb": self.rgb_by_train_id[train_ids],
        }
        if settings.publish_confidence:
            columns["confidence"] = confidence
        raw = settings.label_format == "raw"
        columns["label"] = self.raw_by_train_id[train_ids] if raw else train_ids.astype(np.uint16)
        out = make_cloud(self.cloud_type, self.field_type, msg.header, columns, height=cloud.height)
        encoded = time.perf_counter()

        if cloud.intensity_field is None:
            warning = "the cloud has no intensity field (intensity, remission, reflectivity or i); using zeros"
        else:
            warning = intensity_problem(cloud.points[cloud.finite, 3], settings.intensity_scale)
        timings = {
            "decode": 1e3 * (decoded - start),
            "inference": 1e3 * (predicted - decoded),
            "encode": 1e3 * (encoded - predicted),
        }
        return LabelledScan(out, timings, warning)


def intensity_problem(intensity: np.ndarray, scale: float) -> str | None:
    """A hint when intensities (already divided by ``scale``) are far off the model's 0..1."""
    sample = intensity[:: max(1, len(intensity) // 4096)]
    if len(sample) == 0:
        return None
    high, low = float(np.quantile(sample, 0.99)), float(sample.min())
    if high > 2.0:
        return (
            f"intensity reaches {high * scale:.4g} (99th percentile) while intensity_scale={scale:g} expects at "
            f"most {scale:g}; set intensity_scale to the sensor's full-scale value (KITTI 1, most drivers 255)"
        )
    if low < -0.5:
        return f"negative intensities (down to {low * scale:.4g}); the model expects 0..{scale:g}"
    if scale > 1.0 and 0.0 < high < 1.0 / scale:
        return (
            f"all intensities are below 1 although intensity_scale={scale:g}: the sensor seems to report 0..1 "
            "already (KITTI remission); set intensity_scale: 1.0"
        )
    return None


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


@dataclass
class ScanStats:
    """Counters and recent per-stage latencies; shared by the worker (writes) and the stats timer."""

    window: int = 200
    received: int = 0
    processed: int = 0
    rejected: Counter = field(default_factory=Counter)
    last_points: int = 0
    latencies_ms: dict[str, deque] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, timings_ms: dict[str, float], num_points: int) -> None:
        with self.lock:
            self.processed += 1
            self.last_points = num_points
            for stage, value in timings_ms.items():
                self.latencies_ms.setdefault(stage, deque(maxlen=self.window)).append(value)

    def reject(self, kind: str) -> None:
        with self.lock:
            self.rejected[kind] += 1

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """Per stage (p50, p95) in ms over the recent window."""
        with self.lock:
            recent = {stage: np.asarray(values) for stage, values in self.latencies_ms.items() if values}
        return {stage: (float(np.percentile(v, 50)), float(np.percentile(v, 95))) for stage, v in recent.items()}


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]


def _int_range(low: int, high: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=int(low), to_value=int(high), step=1)]


class SegmentNode(Node):
    def __init__(self, **node_kwargs: Any):
        super().__init__("m2s_segment", **node_kwargs)
        self._declare_parameters()
        self.settings = self._read_label_settings()
        self.add_on_set_parameters_callback(self._validate_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)

        checkpoint = resolve_checkpoint(self._param("checkpoint"))
        self.segmenter = load_segmenter(checkpoint, self._param("device"), self._param("precision"))
        self.get_logger().info(
            f"loaded {checkpoint} on {self.segmenter.device} (fp16 autocast: {self.segmenter.fp16}); warming up"
        )
        self.segmenter.warmup()
        self.labeller = ScanLabeller(self.segmenter, load_label_map(), PointCloud2, PointField)
        self.debug_delay_s = self._param("debug_delay_s")

        self.stats = ScanStats()
        self.slot = LatestScanSlot()
        self._last_warning: dict[tuple[str, str], float] = {}
        self._reported = (0, 0, 0)  # processed, dropped, rejected at the last stats report

        input_topic, output_topic = self._param("input_topic"), self._param("output_topic")
        self.output_pub = self.create_publisher(
            PointCloud2, output_topic, self._qos("output_reliability", "output_depth")
        )
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(PointCloud2, input_topic, self._on_scan, self._qos("input_reliability", "input_depth"))
        self.create_timer(self._param("stats_period_s"), self._report_stats)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="m2s_segment_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"segmenting {input_topic} → {output_topic}")

    # --- parameters -------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        def declare(name: str, default: Any, description: str, **descriptor: Any) -> None:
            self.declare_parameter(name, default, ParameterDescriptor(description=description, **descriptor))

        defaults = LabelSettings()
        declare(
            "checkpoint",
            "",
            "m2s checkpoint (.pt); empty = the packaged demo weights m2s_perception/weights/demo_student.pt",
            read_only=True,
        )
        declare(
            "device", "auto", "torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N", read_only=True
        )
        declare(
            "precision",
            "auto",
            "fp16 autocast on CUDA or fp32; CPU always runs fp32",
            read_only=True,
            additional_constraints="one of: auto (fp16 on CUDA), fp16, fp32",
        )
        declare("input_topic", "/velodyne_points", "sensor_msgs/PointCloud2 to segment", read_only=True)
        declare("output_topic", "/m2s/labelled_points", "labelled sensor_msgs/PointCloud2", read_only=True)
        declare(
            "input_reliability",
            "best_effort",
            "input QoS reliability (sensor data is best_effort)",
            read_only=True,
            additional_constraints="one of: best_effort, reliable",
        )
        declare("input_depth", 1, "input QoS keep-last depth", read_only=True, integer_range=_int_range(1, 100))
        declare(
            "output_reliability",
            "reliable",
            "output QoS reliability; reliable also serves best-effort subscribers",
            read_only=True,
            additional_constraints="one of: best_effort, reliable",
        )
        declare("output_depth", 1, "output QoS keep-last depth", read_only=True, integer_range=_int_range(1, 100))
        declare(
            "intensity_scale",
            defaults.intensity_scale,
            "the sensor's full-scale intensity: values are divided by it to get the model's 0..1 "
            "(KITTI remission 1.0, most drivers 255, Ouster reflectivity about 255..3300)",
            floating_point_range=_float_range(1e-6, 1e6),
        )
        declare(
            "min_range",
            defaults.min_range,
            "points closer than this (m, 3D) get label 0",
            floating_point_range=_float_range(0.0, 1000.0),
        )
        declare(
            "max_range",
            defaults.max_range,
            "points farther than this (m, 3D) get label 0",
            floating_point_range=_float_range(0.0, 1000.0),
        )
        declare(
            "max_points",
            defaults.max_points,
            "clouds with more points are skipped with a warning",
            integer_range=_int_range(1, 100_000_000),
        )
        declare(
            "label_format",
            defaults.label_format,
            "ids in the uint16 'label' field",
            additional_constraints="one of: train (training ids 0..19), raw (SemanticKITTI raw ids)",
        )
        declare("publish_confidence", defaults.publish_confidence, "add a float32 'confidence' field")
        declare(
            "stats_period_s",
            5.0,
            "period of the latency log line and the /diagnostics message",
            read_only=True,
            floating_point_range=_float_range(0.05, 3600.0),
        )
        declare(
            "debug_delay_s",
            0.0,
            "extra sleep per scan, only to test or demonstrate the drop policy; keep 0",
            read_only=True,
            floating_point_range=_float_range(0.0, 60.0),
        )
        for name, choices in (
            ("precision", PRECISIONS),
            ("input_reliability", RELIABILITY),
            ("output_reliability", RELIABILITY),
            ("label_format", LABEL_FORMATS),
        ):
            if self._param(name) not in choices:
                raise ValueError(f"parameter {name}={self._param(name)!r}; expected one of {', '.join(choices)}")
        if self._param("min_range") >= self._param("max_range"):
            raise ValueError(f"min_range {self._param('min_range')} must be below max_range {self._param('max_range')}")

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _read_label_settings(self) -> LabelSettings:
        return LabelSettings(
            intensity_scale=self._param("intensity_scale"),
            min_range=self._param("min_range"),
            max_range=self._param("max_range"),
            max_points=self._param("max_points"),
            label_format=self._param("label_format"),
            publish_confidence=self._param("publish_confidence"),
        )

    def _validate_parameter_change(self, parameters: list) -> SetParametersResult:
        values = {p.name: p.value for p in parameters}
        if values.get("label_format", "train") not in LABEL_FORMATS:
            return SetParametersResult(successful=False, reason=f"label_format must be one of {LABEL_FORMATS}")
        low = values.get("min_range", self._param("min_range"))
        high = values.get("max_range", self._param("max_range"))
        if low >= high:
            return SetParametersResult(successful=False, reason=f"min_range {low} must be below max_range {high}")
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, _parameters: list) -> None:
        self.settings = self._read_label_settings()  # one atomic swap; the worker reads it once per scan

    def _qos(self, reliability: str, depth: str) -> QoSProfile:
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self._param(depth),
            reliability=RELIABILITY[self._param(reliability)],
            durability=DurabilityPolicy.VOLATILE,
        )

    # --- scans ------------------------------------------------------------------------------
    def _on_scan(self, msg: PointCloud2) -> None:
        with self.stats.lock:
            self.stats.received += 1
        self.slot.put(msg)

    def _work(self) -> None:
        while not self._stopping.is_set():
            msg = self.slot.take(timeout=0.2)
            if msg is not None:
                self._process(msg)

    def _process(self, msg: PointCloud2) -> None:
        start = time.perf_counter()
        if self.debug_delay_s:
            time.sleep(self.debug_delay_s)
        settings = self.settings
        try:
            scan = self.labeller.label(msg, settings)
        except ScanRejected as rejected:
            self.stats.reject(rejected.kind)
            self._warn_throttled(rejected.kind, f"{rejected} (frame {msg.header.frame_id!r}); scan skipped")
            return
        except Exception as err:  # a model/runtime failure on one scan must not end the node
            self.stats.reject("internal_error")
            self._warn_throttled("internal_error", f"segmentation failed: {type(err).__name__}: {err}; scan skipped")
            return
        publish_start = time.perf_counter()
        self.output_pub.publish(scan.cloud)
        end = time.perf_counter()
        timings = {**scan.timings_ms, "publish": 1e3 * (end - publish_start), "total": 1e3 * (end - start)}
        stamp = msg.header.stamp
        if stamp.sec or stamp.nanosec:  # pipeline latency: node clock (sim time too) minus sensor stamp
            age_ns = self.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000 + stamp.nanosec)
            timings["pipeline"] = age_ns / 1e6
        self.stats.record(timings, scan.cloud.width * scan.cloud.height)
        if scan.intensity_warning:
            self._warn_throttled("intensity", scan.intensity_warning)

    def _warn_throttled(self, kind: str, text: str) -> None:
        """At most one warning per problem per period; problems differing only in numbers are one problem."""
        key = (kind, re.sub(r"\d+", "#", text))
        now = time.monotonic()
        if now - self._last_warning.get(key, -WARNING_PERIOD_S) >= WARNING_PERIOD_S:
            self._last_warning[key] = now
            self.get_logger().warning(text)

    # --- stats ------------------------------------------------------------------------------
    def _report_stats(self) -> None:
        stats = self.stats
        with stats.lock:
            received, processed, rejected = stats.received, stats.processed, dict(stats.rejected)
            last_points = stats.last_points
        dropped = self.slot.dropped
        percentiles = stats.percentiles()
        new_processed, new_dropped, new_rejected = (
            processed - self._reported[0],
            dropped - self._reported[1],
            sum(rejected.values()) - self._reported[2],
        )
        self._reported = (processed, dropped, sum(rejected.values()))

        latency_text = ", ".join(f"{s} {p50:.1f}/{p95:.1f}" for s, (p50, p95) in percentiles.items() if s in STAGES)
        summary = f"{new_processed} scans labelled, {new_dropped} dropped, {new_rejected} rejected since last report"
        if new_processed or new_dropped or new_rejected:
            self.get_logger().info(f"{summary}; latency ms p50/p95: {latency_text or 'n/a'}")

        status = DiagnosticStatus(name=f"{self.get_name()}: segmentation", hardware_id=str(self.segmenter.device))
        if new_rejected:
            status.level, status.message = DiagnosticStatus.WARN, f"{summary} (bad input)"
        elif new_dropped:
            status.level, status.message = DiagnosticStatus.WARN, f"{summary} (inference slower than the sensor)"
        elif received == 0:
            status.level, status.message = DiagnosticStatus.OK, f"waiting for scans on {self._param('input_topic')}"
        else:
            status.level, status.message = DiagnosticStatus.OK, summary
        values = {
            "scans_received": received,
            "scans_processed": processed,
            "scans_dropped": dropped,
            "scans_rejected": sum(rejected.values()),
            "last_points": last_points,
            **{f"rejected_{kind}": count for kind, count in sorted(rejected.items())},
        }
        for stage, (p50, p95) in percentiles.items():
            values[f"{stage}_ms_p50"] = f"{p50:.2f}"
            values[f"{stage}_ms_p95"] = f"{p95:.2f}"
        status.values = [KeyValue(key=key, value=str(value)) for key, value in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def close(self) -> None:
        """Stop the worker (it finishes the scan in hand)."""
        self._stopping.set()
        self.slot.close()
        self._worker.join(timeout=10.0)


def resolve_checkpoint(value: str) -> Path:
    """The checkpoint parameter as a path; empty means the packaged demo weights."""
    if value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path} (parameter 'checkpoint')")
        return path
    if DEMO_CHECKPOINT.is_file():
        return DEMO_CHECKPOINT
    raise FileNotFoundError(
        "no checkpoint: set the parameter 'checkpoint' (e.g. -p checkpoint:=runs/student/best.pt); "
        f"the packaged demo weights {DEMO_CHECKPOINT} are not installed"
    )


def load_segmenter(checkpoint: Path, device: str, precision: str) -> Any:
    import torch

    from m2s_perception.inference import Segmenter

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use device: auto or cpu)")
    return Segmenter.from_checkpoint(checkpoint, device=device, fp16=PRECISIONS[precision])


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)  # handles --ros-args and SIGINT/SIGTERM
    node = None
    exit_code = 0
    try:
        node = SegmentNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as err:
        if rclpy.ok():  # a failure during shutdown is not a startup error
            rclpy.logging.get_logger("m2s_segment").fatal(f"cannot start: {type(err).__name__}: {err}")
            exit_code = 1
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
