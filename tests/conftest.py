"""Test-wide setup. DDS must stay on loopback: set before anything imports rclpy."""

import os
import random

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
