"""``m2s-segment``: the ROS 2 node that labels a LiDAR's PointCloud2 with an m2s model.

    m2s-segment --ros-args --params-file config/segment.yaml -r points:=/velodyne_points [-p checkpoint:=model.pt]

ROS wiring only: parameters come from ``node_params.PARAMETERS``, labelling from
``pipeline.ScanLabeller``, bookkeeping and the diagnostics verdict from ``node_health``.

Topics (relative, so ``__ns`` and ``-r`` apply): in ``points``; out ``labelled_points`` and
``filtered_points`` (see ``pipeline``), ``/diagnostics`` once per ``stats_period_s``. QoS of each
topic can be overridden the rclpy way, e.g. ``-p qos_overrides./points.subscription.reliability:=reliable``.

Threads: the executor runs the callbacks; the subscription only stores the newest scan. One worker
thread takes the newest scan, segments it and publishes the outputs. A scan arriving while another
still waits replaces it and is counted as dropped, so latency never grows behind a queue. When no
output has a subscriber, scans are counted as skipped and not segmented.

Runs on Humble, Jazzy and Kilted: every rclpy call used here exists in Humble, and the two newer
conveniences (post-set parameter callbacks, QoS overriding options) have fallbacks.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField

from m2s_perception import node_params
from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.node_health import HealthReport, LatestScanSlot, ScanStats, Thresholds, WarningThrottle
from m2s_perception.pipeline import REJECTION_KINDS, ScanLabeller, ScanRejected, load_segmenter, resolve_checkpoint

try:  # rclpy >= Galactic; without it topics keep the QoS given by the *_reliability/*_depth parameters
    from rclpy.qos_overriding_options import QoSOverridingOptions
except ImportError:  # pragma: no cover
    QoSOverridingOptions = None

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
PROBLEM_KINDS = (*REJECTION_KINDS, "intensity", "internal_error")
LOG_PERIOD_S = 5.0


def publisher_name(namespace: str, name: str) -> str:
    """``/ns/node``; DDS announces a writer before its node's name, so for a moment rclpy reports
    placeholders: say so instead of printing them."""
    if name.startswith("_NODE_NAME_UNKNOWN"):
        return "a node not yet discovered"
    return f"{namespace.rstrip('/')}/{name}"


class SegmentNode(Node):
    def __init__(self, **node_kwargs: Any):
        super().__init__("m2s_segment", **node_kwargs)
        self._declare_parameters()
        self.label_map = self._load_label_map()
        problems = node_params.validate(self._values(), self.label_map.class_names)
        if problems:
            raise ValueError("; ".join(problems))
        self._refuse_unknown_parameters(later=node_params.QOS_OVERRIDES_PREFIX)  # before the slow model load
        self.settings = node_params.label_settings(self._values())
        self.add_on_set_parameters_callback(self._validate_change)
        self._post_set = getattr(self, "add_post_set_parameters_callback", None)  # Iron+; Humble: see _validate_change
        if self._post_set is not None:
            self._post_set(lambda _params: self._apply_change(self._values()))

        checkpoint = resolve_checkpoint(self._param("checkpoint"))
        options = {
            k: self._param(k)
            for k in ("device", "precision", "backend", "num_threads", "ensemble_members", "level_ground")
        }
        self.segmenter = load_segmenter(checkpoint, **options, label_map=self.label_map)
        engine = self.segmenter.describe()  # e.g. "openvino 2026.4.1 on cpu", "torch 2.11.0 on cuda fp16"
        self.get_logger().info(f"loaded {checkpoint}: {engine}; warming up")
        self.segmenter.warmup()
        self.labeller = ScanLabeller(self.segmenter, self.label_map, PointCloud2, PointField)
        self.debug_delay_s = self._param("debug_delay_s")

        self.stats = ScanStats()
        self.slot = LatestScanSlot()
        self.throttle = WarningThrottle(PROBLEM_KINDS, self._param("warning_period_s"))
        thresholds = Thresholds(*(self._param(k) for k in ("max_processing_ms", "max_delay_ms", "input_timeout_s")))
        self.health = HealthReport(self.stats, self.slot, thresholds)
        self._last_log = (0.0, "scans_processed 0, scans_dropped 0, scans_rejected 0")  # time, counts logged

        output_qos = self._qos("output_reliability", "output_depth")
        self.output_pub = self._publisher(self._param("output_topic"), output_qos)
        self.filtered_pub = self._publisher(self._param("filtered_topic"), output_qos)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.input_topic = self.resolve_topic_name(self._param("input_topic"))
        self._input_qos = self._qos("input_reliability", "input_depth")
        self.subscription = self.create_subscription(
            PointCloud2, self._param("input_topic"), self._on_scan, self._input_qos, **self._overridable()
        )
        self._refuse_unknown_parameters()
        self.create_timer(self._param("stats_period_s"), self._report)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="m2s_segment_worker", daemon=True)
        self._worker.start()
        outputs = ", ".join(self.resolve_topic_name(self._param(k)) for k in ("output_topic", "filtered_topic"))
        self.get_logger().info(f"segmenting {self.input_topic} → {outputs}")

    # --- parameters -------------------------------------------------------------------------
    def _load_label_map(self) -> LabelMap:
        path = self._param("label_map")
        try:
            return load_label_map(path or None)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"label_map {path!r}: {err}") from None

    def _declare_parameters(self) -> None:
        for p in node_params.PARAMETERS:
            descriptor = ParameterDescriptor(description=p.description, read_only=p.read_only)
            if p.choices:
                descriptor.additional_constraints = f"one of: {', '.join(p.choices)}"
            if p.range and isinstance(p.default, float):
                descriptor.floating_point_range = [FloatingPointRange(from_value=p.range[0], to_value=p.range[1])]
            elif p.range:
                descriptor.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
            if isinstance(p.default, list):  # an empty list has no ROS type: declare it untyped, read None as []
                descriptor.dynamic_typing = True
                self.declare_parameter(p.name, None, descriptor)
            else:
                self.declare_parameter(p.name, p.default, descriptor)

    def _param(self, name: str) -> Any:
        value = self.get_parameter(name).value
        return [] if value is None and isinstance(node_params.BY_NAME[name].default, list) else value

    def _values(self) -> dict[str, Any]:
        return {p.name: self._param(p.name) for p in node_params.PARAMETERS}

    def _validate_change(self, parameters: list) -> SetParametersResult:
        values = {**self._values(), **{p.name: p.value for p in parameters}}
        if values["filtered_classes"] is None:
            values["filtered_classes"] = []
        problems = node_params.validate(values, self.label_map.class_names)
        if problems:
            return SetParametersResult(successful=False, reason="; ".join(problems))
        if self._post_set is None:  # Humble has no post-set callback: this is the last check, apply now
            self._apply_change(values)
        return SetParametersResult(successful=True)

    def _apply_change(self, values: dict[str, Any]) -> None:
        self.settings = node_params.label_settings(values)  # one atomic swap; the worker reads it once per scan

    def _refuse_unknown_parameters(self, later: str = "") -> None:
        """rclpy ignores overrides nobody declares (``-p chekpoint:=x``); a typo must not pass silently.

        ``_parameter_overrides`` (rclpy, Humble to Kilted) holds the overrides addressed to this node.
        Names starting with ``later`` are left for a later call (QoS overrides are declared with the topics).
        """
        given = [name for name in getattr(self, "_parameter_overrides", {}) if not (later and name.startswith(later))]
        problems = node_params.unknown_parameters(given, [name for name in given if self.has_parameter(name)])
        if problems:
            raise ValueError(f"{'; '.join(problems)}; see config/segment.yaml for the parameters")

    def _qos(self, reliability: str, depth: str) -> QoSProfile:
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self._param(depth),
            reliability=RELIABILITY[self._param(reliability)],
            durability=DurabilityPolicy.VOLATILE,
        )

    def _overridable(self) -> dict[str, Any]:
        if QoSOverridingOptions is None:
            return {}
        return {"qos_overriding_options": QoSOverridingOptions.with_default_policies()}

    def _publisher(self, topic: str, qos: QoSProfile) -> Any:
        return self.create_publisher(PointCloud2, topic, qos, **self._overridable())

    # --- scans ------------------------------------------------------------------------------
    def _on_scan(self, msg: PointCloud2) -> None:
        self.stats.arrived()
        self.slot.put(msg)

    def _work(self) -> None:
        while not self._stopping.is_set():
            msg = self.slot.take(timeout=0.2)
            if msg is None:
                continue
            try:
                self._process(msg)
            except Exception as err:  # the guard: whatever fails, this thread keeps serving
                where = traceback.extract_tb(err.__traceback__)[-1]
                text = f"{type(err).__name__}: {err} (at {Path(where.filename).name}:{where.lineno})"
                self.stats.count("internal_error", error=text)
                self._log_throttled("internal_error", f"internal error, scan skipped: {text}", error=True)

    def _process(self, msg: PointCloud2) -> None:
        start = time.perf_counter()
        if self.debug_delay_s:
            time.sleep(self.debug_delay_s)
        labelled = self.output_pub.get_subscription_count() > 0
        filtered = self.filtered_pub.get_subscription_count() > 0
        if not (labelled or filtered):
            self.stats.count("skipped")
            return
        settings = self.settings
        try:
            scan = self.labeller.label(msg, settings, labelled=labelled, filtered=filtered)
        except ScanRejected as rejected:
            self.stats.count("rejected", rejected.kind)
            self._log_throttled(rejected.kind, f"{rejected} (frame {msg.header.frame_id[:64]!r}); scan skipped")
            return
        publish_start = time.perf_counter()
        if scan.cloud is not None:
            self.output_pub.publish(scan.cloud)
        if scan.filtered is not None:
            self.filtered_pub.publish(scan.filtered)
        end = time.perf_counter()
        timings = {**scan.timings_ms, "publish": 1e3 * (end - publish_start), "total": 1e3 * (end - start)}
        stamp = msg.header.stamp
        if stamp.sec or stamp.nanosec:  # pipeline latency: node clock (sim time too) minus sensor stamp
            age_ns = self.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000 + stamp.nanosec)
            timings["pipeline"] = age_ns / 1e6
        self.stats.record(timings, scan.num_points)
        if scan.intensity_warning:
            self._log_throttled("intensity", scan.intensity_warning)

    def _log_throttled(self, kind: str, text: str, error: bool = False) -> None:
        allowed, suppressed = self.throttle.allow(kind)
        if allowed:
            text += f" ({suppressed} more like it suppressed)" if suppressed else ""
            # two call sites: rclpy refuses one call site that logs at two severities
            if error:
                self.get_logger().error(text)
            else:
                self.get_logger().warning(text)

    # --- diagnostics ------------------------------------------------------------------------
    def _input_publishers(self) -> str:
        """Who publishes the input and with which QoS, flagging best-effort ones a reliable input cannot hear."""
        lines = []
        for info in self.get_publishers_info_by_topic(self.input_topic):
            reliability = info.qos_profile.reliability.name.lower()
            deaf = reliability == "best_effort" and self._input_qos.reliability == ReliabilityPolicy.RELIABLE
            note = ", incompatible with this node's reliable input" if deaf else ""
            lines.append(f"{publisher_name(info.node_namespace, info.node_name)} ({reliability}{note})")
        return "; ".join(lines)

    def _report(self) -> None:
        try:
            self._publish_diagnostics()
        except Exception as err:  # an exception in a timer callback would end rclpy.spin, and the node
            self.stats.count("internal_error", error=f"{type(err).__name__}: {err}")
            self._log_throttled("internal_error", f"internal error in diagnostics: {type(err).__name__}: {err}", True)

    def _publish_diagnostics(self) -> None:
        verdict = self.health.assess(self.input_topic, self._input_publishers())
        status = DiagnosticStatus(name=f"{self.get_name()}: segmentation", hardware_id=str(self.segmenter.device))
        status.level, status.message = bytes([verdict.level]), verdict.message
        status.values = [KeyValue(key=key, value=value) for key, value in verdict.values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

        counts = ", ".join(f"{k} {verdict.values[k]}" for k in ("scans_processed", "scans_dropped", "scans_rejected"))
        now, (last_time, last_counts) = time.monotonic(), self._last_log
        if counts != last_counts and now - last_time >= LOG_PERIOD_S:
            self._last_log = (now, counts)
            latency = ", ".join(
                f"{s} {verdict.values[f'{s}_ms_p50']}/{verdict.values[f'{s}_ms_p95']}"
                for s in ("decode", "inference", "encode", "publish", "total")
                if f"{s}_ms_p50" in verdict.values
            )
            self.get_logger().info(f"totals: {counts}; latency ms p50/p95: {latency or 'n/a'}; {verdict.message}")

    def close(self) -> None:
        """Stop the worker (it finishes the scan in hand)."""
        self._stopping.set()
        self.slot.close()
        self._worker.join(timeout=10.0)


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
        if rclpy.ok():  # rclpy.try_shutdown() is not in every distribution's rclpy
            rclpy.shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
