"""A bag's PointCloud2 topic → a SemanticKITTI-layout sequence, to train or fine-tune on your own LiDAR.

Writes ``OUT/sequences/XX/``:
- ``velodyne/NNNNNN.bin``: float32 x, y, z, intensity of each scan, intensity divided by
  ``intensity_scale`` (the sensor's full-scale value, so it lands on KITTI's 0..1), non-finite
  points left out (SemanticKITTI scans hold none; the labels drop the same points);
- ``labels/NNNNNN.label`` (optional): the ``label`` field of a second PointCloud2 topic with the
  same ``header.stamp`` and point count, e.g. a ground-truth topic or the node's output as
  pseudo-labels; raw SemanticKITTI ids are stored (training ids are mapped back with the label map);
  scans without a labelled cloud are left out and counted, never exported unlabelled;
- ``times.txt``: seconds since the first exported scan, from ``header.stamp``;
- ``poses.txt`` + ``calib.txt`` when ``/tf`` holds ``fixed_frame`` → the cloud's frame at each
  scan's stamp (within ``max_pose_gap_s``): the poses are the LiDAR's, so ``calib.txt`` holds an
  identity ``Tr`` (camera frame = LiDAR frame). Without such transforms neither file is written.

The sequence folder is written beside its final place and renamed into it: it is complete or absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.pointcloud2 import CloudFormatError, decode_cloud, read_fields
from m2s_training.atomic import atomic_path
from m2s_training.bag import CLOUD_TOPIC, POINTCLOUD2, TF_MESSAGE, BagError, open_bag, require_topics
from m2s_training.bag.kitti2bag import transform_to_matrix
from m2s_training.data.semantic_kitti import write_calib, write_labels, write_poses, write_scan, write_times

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    cloud_topic: str = CLOUD_TOPIC
    labels_topic: str | None = None  # PointCloud2 with a `label` field, same stamps: labels/ (or none)
    label_format: str = "raw"  # ids in that field: raw SemanticKITTI ids, or train (the node's default output)
    intensity_scale: float = 1.0  # the sensor's full-scale intensity: KITTI 1.0, most drivers 255
    fixed_frame: str = "world"  # parent frame of the poses looked up in /tf
    max_pose_gap_s: float = 0.05  # a /tf sample this close to a scan's stamp is its pose

    def __post_init__(self) -> None:
        if self.label_format not in ("raw", "train"):
            raise ValueError(f"label_format must be 'raw' or 'train', got {self.label_format!r}")
        if not self.intensity_scale > 0:
            raise ValueError(f"intensity_scale must be > 0, got {self.intensity_scale}")


@dataclass
class ExportReport:
    path: Path
    scans: int = 0
    points: int = 0
    non_finite_points: int = 0  # left out
    unlabelled_scans: int = 0  # clouds without a labelled cloud of the same stamp: left out
    poses: str = ""  # "written", or why not
    intensity_warning: str | None = None  # the node's off-scale hint, on the first scan


def _stamp(msg: object) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def _read_labels(bag: Path, topic: str, label_map: LabelMap, label_format: str) -> dict[int, np.ndarray]:
    """Stamp → raw SemanticKITTI ids (uint16) of every message on the labelled topic."""
    labels = {}
    reader = open_bag(bag)
    try:
        connections = [c for c in reader.connections if c.topic == topic]
        for connection, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            try:
                ids = read_fields(msg, ["label"]).reshape(-1)["label"].astype(np.int64)
            except CloudFormatError as error:
                raise BagError(f"{bag}: {topic} at stamp {_stamp(msg)}: {error}") from error
            if label_format == "train":
                if ids.size and (ids.min() < 0 or ids.max() >= label_map.num_classes):
                    raise BagError(f"{bag}: {topic} holds ids outside 0..{label_map.num_classes - 1}: not training ids")
                ids = label_map.to_raw(ids)
            labels[_stamp(msg)] = ids.astype(np.uint16)
    finally:
        reader.close()
    return labels


def _read_poses(bag: Path, parent: str, child: str) -> tuple[np.ndarray, np.ndarray]:
    """Stamps (ns, sorted) and 4x4 matrices of the ``parent`` → ``child`` transforms on ``/tf``."""
    stamps, matrices = [], []
    reader = open_bag(bag)
    try:
        connections = [c for c in reader.connections if c.topic == "/tf" and c.msgtype == TF_MESSAGE]
        # (an empty list would make rosbags read every topic)
        for connection, _, raw in reader.messages(connections=connections) if connections else ():
            for transform in reader.deserialize(raw, connection.msgtype).transforms:
                if transform.header.frame_id.lstrip("/") == parent and transform.child_frame_id.lstrip("/") == child:
                    stamps.append(_stamp(transform))
                    matrices.append(transform_to_matrix(transform.transform))
    finally:
        reader.close()
    order = np.argsort(stamps, kind="stable")
    return np.asarray(stamps, dtype=np.int64)[order], np.asarray(matrices).reshape(-1, 4, 4)[order]


def _pose_at(stamps: np.ndarray, matrices: np.ndarray, stamp: int, max_gap_ns: int) -> np.ndarray | None:
    """The transform nearest in time to ``stamp``, or None when none is within ``max_gap_ns``."""
    k = int(np.searchsorted(stamps, stamp))
    candidates = [i for i in (k - 1, k) if 0 <= i < len(stamps)]
    if not candidates:
        return None
    nearest = min(candidates, key=lambda i: abs(int(stamps[i]) - stamp))
    return matrices[nearest] if abs(int(stamps[nearest]) - stamp) <= max_gap_ns else None


def _intensity_hint(intensity: np.ndarray, scale: float) -> str | None:
    """The node's off-scale intensity hint (the pipeline's check: no rclpy needed)."""
    from m2s_perception.pipeline import intensity_problem

    return intensity_problem(intensity, scale)


def export_sequence(
    bag: str | Path,
    out_root: str | Path,
    sequence: str,
    options: ExportOptions = ExportOptions(),
    progress: bool = True,
) -> ExportReport:
    """Write ``out_root/sequences/<sequence>`` from ``bag``; refuses when that folder exists."""
    bag, name = Path(bag), f"{int(sequence):02d}" if sequence.isdigit() else sequence
    final = Path(out_root) / "sequences" / name
    if final.exists():
        raise BagError(f"{final}: already exists; choose another --sequence or --out")
    reader = open_bag(bag)
    try:
        topics = [options.cloud_topic] + ([options.labels_topic] if options.labels_topic else [])
        require_topics(reader, bag, topics, POINTCLOUD2)
        connections = [c for c in reader.connections if c.topic == options.cloud_topic]
        total = sum(c.msgcount for c in connections)
        label_map = load_label_map()
        labels = (
            _read_labels(bag, options.labels_topic, label_map, options.label_format) if options.labels_topic else None
        )
        report = ExportReport(final)
        stamps, poses, missing_pose = [], [], None
        pose_table = frame = None
        with atomic_path(final) as tmp:
            messages = reader.messages(connections=connections)
            for connection, _, raw in tqdm(messages, total=total, desc=f"bag2kitti {name}", disable=not progress):
                msg = reader.deserialize(raw, connection.msgtype)
                stamp = _stamp(msg)
                try:
                    cloud = decode_cloud(msg, options.intensity_scale)
                except CloudFormatError as error:
                    raise BagError(f"{bag}: {options.cloud_topic} at stamp {stamp}: {error}") from error
                semantic = None
                if labels is not None:
                    semantic = labels.get(stamp)
                    if semantic is None:
                        report.unlabelled_scans += 1
                        continue
                    if semantic.size != cloud.num_points:
                        raise BagError(
                            f"{bag}: stamp {stamp}: {semantic.size} labels on {options.labels_topic} for "
                            f"{cloud.num_points} points on {options.cloud_topic}"
                        )
                if frame is None:
                    report.intensity_warning = _intensity_hint(cloud.points[cloud.finite, 3], options.intensity_scale)
                    frame = msg.header.frame_id.lstrip("/")
                    pose_table = _read_poses(bag, options.fixed_frame, frame)
                pose = _pose_at(*pose_table, stamp, round(options.max_pose_gap_s * 1e9))
                if pose is None and missing_pose is None:
                    missing_pose = stamp
                poses.append(pose)
                frame_id = f"{report.scans:06d}"
                write_scan(tmp / "velodyne" / f"{frame_id}.bin", cloud.points[cloud.finite])
                if semantic is not None:
                    write_labels(tmp / "labels" / f"{frame_id}.label", semantic[cloud.finite])
                stamps.append(stamp)
                report.scans += 1
                report.points += int(cloud.finite.sum())
                report.non_finite_points += int((~cloud.finite).sum())
            if report.scans == 0:
                raise BagError(f"{bag}: no scan to export from {options.cloud_topic}" + (
                    f" with a labelled cloud on {options.labels_topic}" if labels is not None else ""))  # fmt: skip
            write_times(tmp / "times.txt", (np.asarray(stamps, dtype=np.int64) - stamps[0]) * 1e-9)
            if missing_pose is None:
                write_poses(tmp / "poses.txt", np.stack(poses))  # calib Tr = identity: these are LiDAR poses
                write_calib(tmp / "calib.txt", np.eye(4))
                report.poses = "written"
            else:
                report.poses = (
                    f"not written: no /tf {options.fixed_frame} -> {frame} within {options.max_pose_gap_s} s "
                    f"of stamp {missing_pose} (single-scan training needs none; multi-scan fusion does)"
                )
    finally:
        reader.close()
    return report
