"""Clouds, checkpoint and parameters shared by the node tests (tests/test_node*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from m2s_perception.inference import Segmenter
from m2s_perception.models import ModelConfig
from m2s_perception.pointcloud2 import FLOAT32, FLOAT64, UINT16, decode_cloud
from tests.clouds import FieldSpec, ros_cloud

SMALL_POLAR = ModelConfig(width=0.5, grid_size=(32, 24, 8), rho_range=(2.0, 34.0), z_range=(-3.0, 1.0), levels=3)
INTENSITY_SCALE = 255.0
MAX_RANGE = 40.0


def lidar_points(n: int, seed: int) -> np.ndarray:
    """x, y, z, intensity (0..255) on a ring 3..50 m: some points beyond MAX_RANGE."""
    rng = np.random.default_rng(seed)
    rho, phi = rng.uniform(3, 50, n), rng.uniform(-np.pi, np.pi, n)
    z = rng.uniform(-2.5, 0.5, n)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z, rng.uniform(0, 255, n)], 1).astype(np.float32)


def header(sec: int, frame_id: str = "lidar") -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, 1000 + sec
    return h


def kitti_f32(points: np.ndarray, sec: int) -> PointCloud2:
    specs = [FieldSpec(n, 4 * k, FLOAT32) for k, n in enumerate(("x", "y", "z", "intensity"))]
    values = {s.name: points[:, k] for k, s in enumerate(specs)}
    return ros_cloud(PointCloud2, PointField, header(sec, "velodyne"), specs, values, point_step=16)


def float64_padded(points: np.ndarray, sec: int) -> PointCloud2:
    specs = [FieldSpec("x", 0, FLOAT64), FieldSpec("y", 8, FLOAT64), FieldSpec("z", 16, FLOAT64)]
    specs.append(FieldSpec("i", 40, FLOAT64))
    values = {s.name: points[:, k].astype(np.float64) for k, s in enumerate(specs)}
    return ros_cloud(PointCloud2, PointField, header(sec, "lidar_f64"), specs, values, point_step=56)


def big_endian(points: np.ndarray, sec: int) -> PointCloud2:
    specs = [FieldSpec(n, 4 * k, FLOAT32) for k, n in enumerate(("x", "y", "z"))]
    specs.append(FieldSpec("intensity", 12, UINT16))
    values = {s.name: points[:, k] for k, s in enumerate(specs[:3])}
    values["intensity"] = points[:, 3].astype(np.uint16)
    msg = ros_cloud(PointCloud2, PointField, header(sec, "be"), specs, values, point_step=16, big_endian=True)
    return msg


def ouster_like(points: np.ndarray, sec: int, rows: int = 16, big: bool = False) -> PointCloud2:
    """Organised rows × cols, point_step 48, uint16 reflectivity, ring, row padding, NaN returns."""
    specs = [FieldSpec(n, 4 * k, FLOAT32) for k, n in enumerate(("x", "y", "z"))]
    specs += [FieldSpec("t", 16, FLOAT32), FieldSpec("reflectivity", 20, UINT16), FieldSpec("ring", 22, UINT16)]
    points = points.copy()
    points[::7, :3] = np.nan  # no return
    values = {n: points[:, k] for k, n in enumerate(("x", "y", "z"))}
    values["t"] = np.zeros(len(points), np.float32)
    values["reflectivity"] = points[:, 3].astype(np.uint16)
    values["ring"] = np.repeat(np.arange(rows, dtype=np.uint16), len(points) // rows)
    return ros_cloud(
        PointCloud2,
        PointField,
        header(sec, "os_sensor"),
        specs,
        values,
        point_step=48,
        height=rows,
        row_padding=24,
        big_endian=big,
    )


def node_parameters(checkpoint: Path, name: str, **overrides) -> dict:
    return {
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "input_topic": f"/{name}/points",
        "output_topic": f"/{name}/labelled",
        "input_reliability": "reliable",  # the test publishes each scan once
        "intensity_scale": INTENSITY_SCALE,
        "max_range": MAX_RANGE,
        "max_points": 20_000,
        "publish_confidence": True,
        "stats_period_s": 0.3,
        **overrides,
    }


def expected_labels(segmenter: Segmenter, msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    cloud = decode_cloud(msg, INTENSITY_SCALE)
    with np.errstate(invalid="ignore"):
        selected = cloud.finite & (np.linalg.norm(cloud.points[:, :3], axis=1) <= MAX_RANGE)
    labels = np.zeros(cloud.num_points, np.uint16)
    confidence = np.zeros(cloud.num_points, np.float32)
    prediction = segmenter.predict(cloud.points[selected])
    labels[selected], confidence[selected] = prediction.labels, prediction.confidence
    return labels, confidence
