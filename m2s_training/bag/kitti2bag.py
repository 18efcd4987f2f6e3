"""A SemanticKITTI-layout sequence (real or synthetic) → a rosbag2 bag.

Topics (names configurable through :class:`BagLayout`):
- ``/velodyne_points``: the scans, ``sensor_msgs/PointCloud2`` in frame ``velodyne`` with float32
  x, y, z, intensity (KITTI remission, 0..1), bit-exact copies of the ``.bin`` files;
- ``/velodyne_points/ground_truth``: the same points plus ``label`` (uint16 raw SemanticKITTI id,
  the low 16 bits of the ``.label`` file) and ``rgb`` (float32-packed 0x00RRGGBB, so RViz colours
  it directly), same stamps;
- ``/tf``: world → velodyne from ``poses.txt`` (``T_world_lidar``), one transform per scan;
- ``/tf_static`` (transient_local, as ``ros2 bag play`` needs it): velodyne → camera from ``calib.txt``.

Stamps are ``start_time + times.txt`` in integer nanoseconds; bag log time equals the header stamp.
The bag is written beside its final path and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from tqdm import tqdm

from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.pointcloud2 import make_cloud
from m2s_training.atomic import OverwriteRefused, atomic_path
from m2s_training.bag import (
    CLOUD_TOPIC,
    GROUND_TRUTH_TOPIC,
    POINTCLOUD2,
    TF_MESSAGE,
    TYPESTORE,
    BagError,
    is_rosbag2_dir,
)
from m2s_training.data.semantic_kitti import Sequence

DEFAULT_START_TIME_NS = 1_500_000_000 * 10**9  # 2017-07-14: a plausible wall-clock epoch, never "time zero"
STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

_T = TYPESTORE.types
_NO_TIME = QosTime(0, 0)


def _qos(reliability: QosReliability, durability: QosDurability, depth: int) -> Qos:
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        reliability,
        durability,
        _NO_TIME,
        _NO_TIME,
        QosLiveliness.AUTOMATIC,
        _NO_TIME,
        False,
    )


SENSOR_DATA_QOS = _qos(QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 5)
TF_QOS = _qos(QosReliability.RELIABLE, QosDurability.VOLATILE, 100)
TF_STATIC_QOS = _qos(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1)


@dataclass(frozen=True)
class BagLayout:
    cloud_topic: str = CLOUD_TOPIC
    labels_topic: str = GROUND_TRUTH_TOPIC
    lidar_frame: str = "velodyne"
    world_frame: str = "world"
    camera_frame: str = "camera"
    start_time_ns: int = DEFAULT_START_TIME_NS


def stamps_ns(times: np.ndarray, start_time_ns: int) -> np.ndarray:
    """Integer nanosecond stamps ``start + round(times * 1e9)``: no float rounding on the large epoch."""
    return start_time_ns + np.round(np.asarray(times, dtype=np.float64) * 1e9).astype(np.int64)


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(x, y, z, w) of a 3x3 rotation matrix; branch on the largest diagonal term for stability."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def transform_to_matrix(transform: object) -> np.ndarray:
    """4x4 matrix of a geometry_msgs/Transform (rosbags or rclpy message)."""
    t, r = transform.translation, transform.rotation
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_to_rotation([r.x, r.y, r.z, r.w])
    matrix[:3, 3] = [t.x, t.y, t.z]
    return matrix


def header(stamp_ns: int, frame_id: str) -> object:
    stamp = _T["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9))
    return _T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def transform_stamped(stamp_ns: int, parent: str, child: str, matrix: np.ndarray) -> object:
    qx, qy, qz, qw = rotation_to_quaternion(matrix[:3, :3])
    tx, ty, tz = (float(v) for v in matrix[:3, 3])
    transform = _T["geometry_msgs/msg/Transform"](
        translation=_T["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
        rotation=_T["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz), w=float(qw)),
    )
    return _T["geometry_msgs/msg/TransformStamped"](
        header=header(stamp_ns, parent), child_frame_id=child, transform=transform
    )


def packed_rgb(colours: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colours → float32 values whose bits are 0x00RRGGBB (RViz's RGB8 convention)."""
    colours = np.asarray(colours, dtype=np.uint32)
    packed = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    return packed.view(np.float32)


def scan_columns(points: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2], "intensity": points[:, 3]}


def cloud_message(stamp_ns: int, frame_id: str, columns: dict[str, np.ndarray]) -> object:
    return make_cloud(_T[POINTCLOUD2], _T["sensor_msgs/msg/PointField"], header(stamp_ns, frame_id), columns)


def convert_sequence(
    data_root: str | Path,
    sequence: str,
    out: str | Path,
    *,
    layout: BagLayout = BagLayout(),
    storage: str = "mcap",
    version: int = 9,
    overwrite: bool = False,
    label_map: LabelMap | None = None,
    progress: bool = True,
) -> Path:
    """Write ``data_root/sequences/<sequence>`` as a bag at ``out``; returns ``out``."""
    out = Path(out)
    if storage not in STORAGE_PLUGINS:
        raise BagError(f"unknown storage format {storage!r}; expected one of {', '.join(STORAGE_PLUGINS)}")
    if out.exists() and not overwrite:
        raise BagError(f"{out}: already exists; pass --overwrite to replace it")
    if out.is_dir() and not is_rosbag2_dir(out):  # --overwrite replaces a bag, never a user's folder
        raise OverwriteRefused(f"{out}: not a rosbag2 bag (metadata.yaml + storage files only); refusing to replace it")
    label_map = label_map or load_label_map()
    seq = Sequence(data_root, sequence)
    stamps = stamps_ns(seq.times, layout.start_time_ns)
    poses, tr_lidar_to_camera = seq.poses, seq.calib["Tr"]

    with atomic_path(out, replace_dir=is_rosbag2_dir) as tmp:
        writer = Writer(tmp, version=version, storage_plugin=STORAGE_PLUGINS[storage])
        writer.open()
        try:
            cloud = writer.add_connection(
                layout.cloud_topic, POINTCLOUD2, typestore=TYPESTORE, offered_qos_profiles=[SENSOR_DATA_QOS]
            )
            labels = None
            if seq.has_labels:
                labels = writer.add_connection(
                    layout.labels_topic, POINTCLOUD2, typestore=TYPESTORE, offered_qos_profiles=[SENSOR_DATA_QOS]
                )
            tf = writer.add_connection("/tf", TF_MESSAGE, typestore=TYPESTORE, offered_qos_profiles=[TF_QOS])
            tf_static = writer.add_connection(
                "/tf_static", TF_MESSAGE, typestore=TYPESTORE, offered_qos_profiles=[TF_STATIC_QOS]
            )
            # The camera's pose in the LiDAR frame: Tr maps LiDAR points into the camera, so its inverse.
            static = transform_stamped(
                int(stamps[0]), layout.lidar_frame, layout.camera_frame, np.linalg.inv(tr_lidar_to_camera)
            )
            _write(writer, tf_static, int(stamps[0]), _T[TF_MESSAGE](transforms=[static]), TF_MESSAGE)

            for index in tqdm(range(len(seq)), desc=f"kitti2bag {seq.name}", unit="scan", disable=not progress):
                stamp = int(stamps[index])
                points = seq.points(index)
                pose = transform_stamped(stamp, layout.world_frame, layout.lidar_frame, poses[index])
                _write(writer, tf, stamp, _T[TF_MESSAGE](transforms=[pose]), TF_MESSAGE)
                columns = scan_columns(points)
                _write(writer, cloud, stamp, cloud_message(stamp, layout.lidar_frame, columns), POINTCLOUD2)
                if labels is not None:
                    semantic, _instance = seq.labels(index, len(points))
                    columns = {**columns, "label": semantic, "rgb": packed_rgb(label_map.raw_rgb_lut[semantic])}
                    _write(writer, labels, stamp, cloud_message(stamp, layout.lidar_frame, columns), POINTCLOUD2)
        finally:
            writer.close()
    return out


def _write(writer: Writer, connection: object, stamp_ns: int, message: object, msgtype: str) -> None:
    writer.write(connection, stamp_ns, TYPESTORE.serialize_cdr(message, msgtype))
