"""``m2s-bag evaluate``: replay a bag through the real ``m2s-segment`` node and score what it publishes.

1. start the node as a subprocess (console script ``m2s-segment``, generated params file, DDS on
   loopback) and wait until it subscribes to the cloud topic and advertises its output;
2. replay the bag's clouds (timed at ``--rate``, or ``--lockstep``: each scan only after the node
   answered the previous one, so nothing is dropped) and record every labelled cloud the node
   publishes, as raw CDR, into ``OUT/output_bag`` (beside a copy of the input topics, so Foxglove
   or a ``ros2 bag play`` + RViz shows input, ground truth and prediction together);
3. match outputs to the bag's ground-truth clouds by the copied ``header.stamp`` and score them
   with the same confusion matrix / IoU code as ``m2s-eval``; a scan without an output is counted
   as dropped, never skipped silently;
4. write ``OUT/iou.png`` and, last, ``OUT/metrics.json`` (mIoU, IoU per class, latency p50/p95/max
   from publish to receive on the wall clock, dropped scans). An earlier ``metrics.json`` is removed
   when the run starts, so it exists only beside a finished run's output.

The node runs in its own process group and ends with this process (Linux parent-death signal
SIGTERM), even when this process is killed with SIGKILL.

With ``--lockstep`` the mIoU equals ``m2s-eval``'s on the same scans and checkpoint: both label
every point through ``Segmenter.predict`` and both score with ``m2s_training.metrics``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from rosbags.rosbag2 import Writer

from m2s_perception.checkpoint import read_checkpoint
from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.pointcloud2 import CloudFormatError, read_fields
from m2s_training.atomic import atomic_path, write_text_atomic
from m2s_training.bag import (
    CLOUD_TOPIC,
    GROUND_TRUTH_TOPIC,
    POINTCLOUD2,
    TYPESTORE,
    BagError,
    is_rosbag2_dir,
    open_bag,
    require_topics,
    use_loopback_dds,
)
from m2s_training.bag.kitti2bag import SENSOR_DATA_QOS, STORAGE_PLUGINS
from m2s_training.bag.node_process import NodeProcess
from m2s_training.bag.replay import BagMessage, BagPlayer, ReplayOptions
from m2s_training.metrics import SegmentationMetrics, confusion_matrix
from m2s_training.reporting import plot_iou

log = logging.getLogger(__name__)

OUTPUT_TOPIC = "/m2s/labelled_points"


@dataclass(frozen=True)
class EvaluationOptions:
    rate: float = 1.0
    lockstep: bool = False  # wait for the node's answer to each scan before the next: nothing dropped
    device: str = "auto"  # the node's device
    backend: str = "torch"  # the node's inference engine: torch | onnxruntime | openvino
    cloud_topic: str = CLOUD_TOPIC
    labels_topic: str = GROUND_TRUTH_TOPIC
    output_topic: str = OUTPUT_TOPIC
    timeout: float = 60.0  # seconds for the node to come up, and per scan in lock-step mode
    storage: str = "mcap"  # of OUT/output_bag
    node_parameters: dict = field(default_factory=dict)  # extra m2s-segment parameters (override ours)


def stamp_ns(header: object) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def node_parameters(checkpoint: Path, options: EvaluationOptions) -> dict:
    """The ``m2s-segment`` parameters: our topics, KITTI intensity scale, training ids, no range cut.

    The node gives label 0 to points outside [min_range, max_range]; ``m2s-eval`` labels every
    point, so the range limits are opened wide for the two to agree.
    """
    parameters = {
        "checkpoint": str(checkpoint.resolve()),
        "device": options.device,
        "input_topic": options.cloud_topic,
        "output_topic": options.output_topic,
        "intensity_scale": 1.0,  # bags from kitti2bag carry KITTI remission (0..1)
        "min_range": 0.0,
        "max_range": 1000.0,
        "label_format": "train",
        # Reliable both ways: best-effort clouds of ~2 MB lose fragments even on loopback, and a
        # lost cloud would be counted against the node. The node still keeps only the newest scan
        # (keep-last 1), so reliability adds no queue and the drop count measures the node alone.
        "input_reliability": "reliable",
        "output_reliability": "reliable",
        # a replayed bag carries its recording's stamps: their age says nothing about the node
        "max_delay_ms": 0.0,
    }
    if options.backend != "torch":  # only when set: a node without the parameter still runs the default
        parameters["backend"] = options.backend
    return {**parameters, **options.node_parameters}


@dataclass
class Recording:
    """What happened on the wire, keyed by header stamp (ns)."""

    published: dict[int, float] = field(default_factory=dict)  # stamp → time.monotonic() of publish
    received: dict[int, float] = field(default_factory=dict)  # stamp → time.monotonic() of receive
    labels: dict[int, np.ndarray] = field(default_factory=dict)  # stamp → (N,) uint8 training ids
    bad_outputs: list[str] = field(default_factory=list)
    duplicates: int = 0

    def latencies_ms(self) -> np.ndarray:
        common = [s for s in self.received if s in self.published]
        return np.array([1000.0 * (self.received[s] - self.published[s]) for s in common])


class OutputRecorder:
    """Subscribes to the node's output as raw CDR: written to the output bag as is, labels decoded."""

    def __init__(self, node, topic: str, writer: Writer, label_map: LabelMap, raw_label_ids: bool):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        self.recording = Recording()
        self._writer = writer
        self._connection = writer.add_connection(
            topic, POINTCLOUD2, typestore=TYPESTORE, offered_qos_profiles=[SENSOR_DATA_QOS]
        )
        self._label_map = label_map
        self._raw_label_ids = raw_label_ids
        self._answered = threading.Condition()
        # Reliable (the node is told to publish reliable) and a deep queue: nothing lost on our side.
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.subscription = node.create_subscription(PointCloud2, topic, self._on_output, qos, raw=True)

    def _on_output(self, raw: bytes) -> None:
        received = time.monotonic()
        msg = TYPESTORE.deserialize_cdr(raw, POINTCLOUD2)
        stamp = stamp_ns(msg.header)
        self._writer.write(self._connection, stamp, raw)
        try:
            labels = read_fields(msg, ["label"]).reshape(-1)["label"]
        except CloudFormatError as error:
            self.recording.bad_outputs.append(f"stamp {stamp}: {error}")
            return
        labels = self._label_map.to_train(labels) if self._raw_label_ids else labels.astype(np.uint8)
        with self._answered:
            if stamp in self.recording.received:
                self.recording.duplicates += 1
            else:
                self.recording.received[stamp] = received
                self.recording.labels[stamp] = labels
            self._answered.notify_all()

    def wait_for(self, stamp: int, timeout: float, alive) -> bool:
        deadline = time.monotonic() + timeout
        with self._answered:
            while stamp not in self.recording.received:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not alive():
                    return False
                self._answered.wait(min(remaining, 0.5))
        return True


def _wait_until_ready(player: BagPlayer, recorder: OutputRecorder, segment: NodeProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (player.wait_for_subscribers(0.0) and recorder.subscription.get_publisher_count() > 0):
        if not segment.alive():
            raise BagError(f"m2s-segment exited with code {segment.process.returncode}:\n{segment.log_tail()}")
        if time.monotonic() > deadline:
            raise BagError(
                f"m2s-segment not ready after {timeout:.0f} s (log {segment.log_path}):\n{segment.log_tail()}"
            )
        time.sleep(0.05)


def _copy_topics(bag: Path, writer: Writer) -> None:
    """Copy every topic of the input bag into ``writer`` as raw CDR."""
    reader = open_bag(bag)
    try:
        copies = {}
        for c in reader.connections:
            if c.topic not in copies:
                copies[c.topic] = writer.add_connection(
                    c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest,
                    offered_qos_profiles=c.ext.offered_qos_profiles,
                )  # fmt: skip
        for connection, log_time, raw in reader.messages():
            writer.write(copies[connection.topic], log_time, raw)
    finally:
        reader.close()


def _replay_and_record(bag: Path, checkpoint: Path, out: Path, options: EvaluationOptions) -> Recording:
    """Steps 1 and 2 of the module docstring; the output bag is renamed into place on success."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    label_map = load_label_map()
    parameters = node_parameters(checkpoint, options)
    params_file = out / "segment_params.yaml"
    write_text_atomic(params_file, yaml.safe_dump({"/**": {"ros__parameters": parameters}}, sort_keys=False))

    with ExitStack() as stack:
        output_bag = stack.enter_context(atomic_path(out / "output_bag", replace_dir=is_rosbag2_dir))
        writer = Writer(output_bag, version=9, storage_plugin=STORAGE_PLUGINS[options.storage])
        writer.open()
        stack.callback(writer.close)
        _copy_topics(bag, writer)

        segment = NodeProcess(params_file, out / "node.log")
        stack.callback(segment.stop)
        context = rclpy.Context()
        rclpy.init(context=context)
        stack.callback(context.try_shutdown)
        node = rclpy.create_node("m2s_bag_evaluate", context=context)
        stack.callback(node.destroy_node)
        player = BagPlayer(
            node, bag, ReplayOptions(rate=options.rate, topics=(options.cloud_topic,), reliable_clouds=True)
        )
        stack.callback(player.close)
        recorder = OutputRecorder(
            node, options.output_topic, writer, label_map, raw_label_ids=parameters["label_format"] == "raw"
        )
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        stack.callback(spinner.join, 5)
        stack.callback(executor.shutdown)

        _wait_until_ready(player, recorder, segment, options.timeout)
        recording = recorder.recording

        def on_published(message: BagMessage, sent: float) -> None:
            stamp = stamp_ns(TYPESTORE.deserialize_cdr(message.data, message.msgtype).header)
            recording.published[stamp] = sent
            if options.lockstep and not recorder.wait_for(stamp, options.timeout, segment.alive):
                log.warning("no output for scan %d within %.0f s; counted as dropped", stamp, options.timeout)

        player.play(on_published)
        # A node that keeps up answers each scan within its latency; wait a few times the worst seen.
        worst = float(recording.latencies_ms().max(initial=0.0)) / 1000.0
        last = max(recording.published, default=0)
        recorder.wait_for(last, min(options.timeout, max(2.0, 3.0 * worst)), segment.alive)
        if not segment.alive():
            raise BagError(f"m2s-segment exited with code {segment.process.returncode}:\n{segment.log_tail()}")
    return recording


def score(bag: Path, labels_topic: str, recording: Recording, label_map: LabelMap) -> tuple[torch.Tensor, dict]:
    """Confusion matrix over the ground-truth clouds that got an output; counts of the others."""
    confusion = torch.zeros(label_map.num_classes, label_map.num_classes, dtype=torch.int64)
    dropped, mismatched = [], []
    reader = open_bag(bag)
    try:
        connections = [c for c in reader.connections if c.topic == labels_topic]
        for connection, _, raw in reader.messages(connections=connections):
            truth_msg = reader.deserialize(raw, connection.msgtype)
            stamp = stamp_ns(truth_msg.header)
            truth = label_map.to_train(read_fields(truth_msg, ["label"]).reshape(-1)["label"])
            predicted = recording.labels.get(stamp)
            if predicted is None:
                dropped.append(stamp)
            elif predicted.shape != truth.shape:
                mismatched.append(f"stamp {stamp}: {predicted.size} labels for {truth.size} points")
            else:
                confusion += confusion_matrix(torch.from_numpy(predicted), torch.from_numpy(truth), len(confusion))
    finally:
        reader.close()
    return confusion, {"dropped": dropped, "mismatched": mismatched}


def _percentiles(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"p50": None, "p95": None, "max": None, "mean": None, "count": 0}
    return {
        "p50": round(float(np.percentile(values, 50)), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
        "max": round(float(values.max()), 2),
        "mean": round(float(values.mean()), 2),
        "count": int(values.size),
    }


def evaluate_bag(bag: str | Path, checkpoint: str | Path, out: str | Path, options: EvaluationOptions) -> dict:
    """Run the evaluation; returns the dict written to ``OUT/metrics.json``."""
    use_loopback_dds()
    bag, checkpoint, out = Path(bag), Path(checkpoint), Path(out)
    read_checkpoint(checkpoint)  # fail here, with the file named, rather than inside the node
    reader = open_bag(bag)
    try:
        require_topics(reader, bag, [options.cloud_topic, options.labels_topic], POINTCLOUD2)
        total = sum(c.msgcount for c in reader.connections if c.topic == options.labels_topic)
    finally:
        reader.close()
    out.mkdir(parents=True, exist_ok=True)
    label_map = load_label_map()
    # metrics.json marks a finished run: an earlier run's must not sit beside this run's partial output.
    (out / "metrics.json").unlink(missing_ok=True)

    recording = _replay_and_record(bag, checkpoint, out, options)
    confusion, counts = score(bag, options.labels_topic, recording, label_map)
    metrics = SegmentationMetrics.from_confusion(confusion, label_map.hard_class_ids())
    scored = total - len(counts["dropped"]) - len(counts["mismatched"])
    result = {
        **metrics.to_dict(label_map),
        "scans": total,
        "scans_scored": scored,
        "scans_dropped": len(counts["dropped"]),
        "dropped_stamps_ns": counts["dropped"],
        "scans_with_wrong_point_count": counts["mismatched"],
        "bad_outputs": recording.bad_outputs,
        "duplicate_outputs": recording.duplicates,
        "latency_ms": _percentiles(recording.latencies_ms()),
        "latency_definition": "wall clock from publishing a scan to receiving its labelled cloud (same host)",
        "mode": "lockstep" if options.lockstep else f"rate {options.rate:g}",
        "bag": str(bag),
        "checkpoint": str(checkpoint),
        "device": options.device,
        "output_bag": str(out / "output_bag"),
        "iou_png": str(out / "iou.png"),
        "node_log": str(out / "node.log"),
    }
    title = f"{checkpoint.name} on {bag.name} ({scored}/{total} scans, {result['mode']})"
    plot_iou(metrics, label_map, out / "iou.png", title=title)
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=1) + "\n")  # last: the run is complete
    return result


def print_summary(result: dict) -> None:
    latency = result["latency_ms"]
    print(f"mIoU {result['miou']:.4f} over {result['scans_scored']}/{result['scans']} scans ({result['mode']})")
    print(f"dropped scans: {result['scans_dropped']}")
    if latency["count"]:
        print(f"latency publish→receive: p50 {latency['p50']} ms, p95 {latency['p95']} ms, max {latency['max']} ms")
    for name, iou in result["iou"].items():
        print(f"  {name:<14} {iou:.4f}")
    print(f"metrics: {Path(result['output_bag']).parent / 'metrics.json'}")
    print(f"IoU chart: {result['iou_png']}")
    print(f"output bag: {result['output_bag']} (open in Foxglove, or ros2 bag play + RViz)")
