"""Test-wide setup. DDS must stay on loopback: set before anything imports rclpy.

Every process a test starts inherits ``os.environ``, so the node subprocesses, the clients and
the bag tools all use the shipped Fast DDS profile (shared memory sized for large best-effort
clouds, UDP on 127.0.0.1 only; see ``config/fastdds.xml``) unless the caller exported another.
"""

import os
import random
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault(
    "FASTDDS_DEFAULT_PROFILES_FILE", str(Path(__file__).resolve().parents[1] / "config" / "fastdds.xml")
)
