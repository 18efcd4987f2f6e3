"""rosbag2 tools: SemanticKITTI → bag, replay through rclpy, and replay evaluation of the node.

``kitti2bag`` and the evaluation's bookkeeping need only ``rosbags``; ``replay`` and ``evaluate``
import rclpy when they run, so converting a sequence works on machines without ROS.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

CLOUD_TOPIC = "/velodyne_points"
GROUND_TRUTH_TOPIC = "/velodyne_points/ground_truth"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

# Message definitions of these types are the same in every ROS 2 distribution since Iron.
TYPESTORE = get_typestore(Stores.ROS2_KILTED)


class BagError(ValueError):
    """A bag is missing, unreadable or lacks what a command needs; the message names bag and problem."""


def open_bag(path: str | Path) -> AnyReader:
    """An opened ``AnyReader`` on a rosbag2 folder, with errors that name the bag."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: bag does not exist")
    reader = AnyReader([path], default_typestore=TYPESTORE)
    try:
        reader.open()
    except Exception as error:  # rosbags raises several unrelated types for unreadable bags
        raise BagError(f"{path}: not a readable rosbag2 bag ({error})") from error
    return reader


BAG_FILE_SUFFIXES = (".mcap", ".db3", ".db3-shm", ".db3-wal", ".zstd")


def is_rosbag2_dir(path: Path) -> bool:
    """A folder holding a rosbag2 bag and nothing else: the only kind of folder our tools replace."""
    entries = list(path.iterdir())
    return (path / "metadata.yaml").is_file() and all(
        e.is_file() and (e.name == "metadata.yaml" or e.name.endswith(BAG_FILE_SUFFIXES)) for e in entries
    )


def require_topics(reader: AnyReader, path: str | Path, topics: list[str], msgtype: str | None = None) -> None:
    """Raise ``BagError`` naming the bag and its topics when one of ``topics`` is absent (or of another type)."""
    present = reader.topics
    for topic in topics:
        if topic not in present:
            have = ", ".join(f"{t} ({info.msgtype})" for t, info in sorted(present.items())) or "none"
            raise BagError(f"{path}: no topic {topic!r} in the bag; it has: {have}")
        if msgtype is not None and present[topic].msgtype != msgtype:
            raise BagError(f"{path}: topic {topic!r} holds {present[topic].msgtype}, expected {msgtype}")


def fastdds_profile() -> Path | None:
    """``config/fastdds.xml`` of a source checkout or pip install, else of the colcon install."""
    beside = Path(__file__).resolve().parents[2] / "config" / "fastdds.xml"
    if beside.is_file():
        return beside
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("m2s_perception")) / "config" / "fastdds.xml"
    except Exception:  # no ament index, or the package is not in it
        return None
    return installed if installed.is_file() else None


def use_loopback_dds() -> None:
    """Keep DDS of this process and its children on loopback, unless the caller already chose.

    With DDS on loopback, also use the shipped Fast DDS profile (shared memory for large
    best-effort clouds, UDP on 127.0.0.1 only) unless ``FASTDDS_DEFAULT_PROFILES_FILE`` is set.
    Must run before rclpy is imported anywhere in the process.
    """
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    profile = fastdds_profile()
    if os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and profile is not None:
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
