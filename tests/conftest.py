"""Test-wide setup. DDS must stay on loopback: set before anything imports rclpy.

Every process a test starts inherits ``os.environ``, so the node subprocesses, the clients and
the bag tools all use the shipped Fast DDS profile (shared memory sized for large best-effort
clouds, UDP on 127.0.0.1 only; see ``config/fastdds.xml``) unless the caller exported another.
"""

import os
import random
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault(
    "FASTDDS_DEFAULT_PROFILES_FILE", str(Path(__file__).resolve().parents[1] / "config" / "fastdds.xml")
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The node tests' small random polar checkpoint (``tests.node_clouds.SMALL_POLAR``)."""
    import torch

    from m2s_perception.models import build_model
    from m2s_training.checkpoint import save_checkpoint
    from tests.node_clouds import SMALL_POLAR

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small_polar.pt"
    save_checkpoint(path, build_model(SMALL_POLAR), SMALL_POLAR)
    return path


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    from m2s_perception.inference import Segmenter

    return Segmenter.from_checkpoint(checkpoint, device="cpu")
