"""The shipped Fast DDS profile: large best-effort clouds reach the node, and DDS stays on loopback.

``tests/conftest.py`` exports ``FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds.xml`` for every process
the tests start. Without it, Fast DDS's built-in transports lost every 1.9 MB best-effort cloud
here (0 of 20 at 10 Hz, ``bench/qos_delivery.py``), so the node test below failed.
"""

from __future__ import annotations

import os
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from m2s_perception.models import ModelConfig, build_model
from m2s_perception.pointcloud2 import make_cloud, read_fields
from m2s_training.checkpoint import save_checkpoint
from tests.segment_process import REPO, CloudClient, SegmentProcess

PROFILE = REPO / "config" / "fastdds.xml"
NS = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
HDL64_POINTS = 120_000  # 64 beams x 1875 columns; 16 bytes each: 1.92 MB


def test_tests_run_with_the_shipped_profile():
    assert Path(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]).resolve() == PROFILE.resolve()


def test_profile_holds_an_hdl64_cloud_in_shared_memory_and_keeps_udp_on_loopback():
    root = ET.parse(PROFILE).getroot()
    transports = {
        t.findtext("f:transport_id", namespaces=NS): t for t in root.iterfind(".//f:transport_descriptor", NS)
    }
    shm = [t for t in transports.values() if t.findtext("f:type", namespaces=NS) == "SHM"]
    udp = [t for t in transports.values() if t.findtext("f:type", namespaces=NS) == "UDPv4"]
    assert len(shm) == 1 and len(udp) == 1
    # A labelled HDL-64 output (x y z intensity rgb label: ~3.4 MB) fits one message; several fit the segment.
    assert int(shm[0].findtext("f:maxMessageSize", namespaces=NS)) >= 4 * 2**20
    assert (
        int(shm[0].findtext("f:segment_size", namespaces=NS))
        >= 4 * int(shm[0].findtext("f:maxMessageSize", namespaces=NS)) / 2
    )
    assert [a.text for a in udp[0].iterfind(".//f:interfaceWhiteList/f:address", NS)] == ["127.0.0.1"]
    participant = root.find(".//f:participant", NS)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//f:useBuiltinTransports", namespaces=NS) == "false"
    assert sorted(t.text for t in participant.iterfind(".//f:userTransports/f:transport_id", NS)) == sorted(transports)


def hdl64_cloud(sec: int) -> PointCloud2:
    rng = np.random.default_rng(sec)
    rho, phi = rng.uniform(3, 60, HDL64_POINTS), rng.uniform(-np.pi, np.pi, HDL64_POINTS)
    columns = {
        "x": (rho * np.cos(phi)).astype(np.float32),
        "y": (rho * np.sin(phi)).astype(np.float32),
        "z": rng.uniform(-2.5, 0.5, HDL64_POINTS).astype(np.float32),
        "intensity": rng.uniform(0, 1, HDL64_POINTS).astype(np.float32),
    }
    header = Header(frame_id="velodyne")
    header.stamp.sec = sec
    return make_cloud(PointCloud2, PointField, header, columns)


@pytest.mark.ros
def test_best_effort_hdl64_clouds_get_labelled_clouds_back(tmp_path: Path):
    """A driver with sensor-data QoS (best effort) and the node at its default (best-effort) input."""
    small = ModelConfig(width=0.5, grid_size=(32, 24, 8), rho_range=(2.0, 60.0), z_range=(-3.0, 1.0), levels=3)
    torch.manual_seed(0)
    checkpoint = tmp_path / "small.pt"
    save_checkpoint(checkpoint, build_model(small), small)
    name = "m2s_qos_test"
    parameters = {"checkpoint": str(checkpoint), "device": "cpu", "input_topic": f"/{name}/points",
                  "output_topic": f"/{name}/labelled"}  # fmt: skip
    node = SegmentProcess(tmp_path, name, parameters)  # input_reliability left at its default
    client = CloudClient(f"/{name}/points", f"/{name}/labelled")
    try:
        assert "input_reliability" not in parameters
        driver = client.node.create_publisher(PointCloud2, f"/{name}/points", qos_profile_sensor_data)
        client.wait_until(lambda: driver.get_subscription_count() > 0 or node.process.poll() is not None, 60)
        assert driver.get_subscription_count() > 0, node.log()
        assert client.probe(driver, hdl64_cloud(0), 60), node.log()  # both directions carry clouds now
        answered = []
        for sec in range(1, 6):  # one scan at a time: the node keeps only the newest
            driver.publish(hdl64_cloud(sec))
            if client.wait_until(lambda sec=sec: any(k[0] == sec for k in client.outputs), 15):
                answered.append(sec)
        assert answered == [1, 2, 3, 4, 5], f"answered {answered}; node log:\n{node.log()}"
        out = next(msg for (sec, _ns), msg in client.outputs.items() if sec == 5)
        assert out.width == HDL64_POINTS and read_fields(out, ["label"]).size == HDL64_POINTS
    finally:
        client.close()
        node.stop(signal.SIGTERM)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ({}, str(PROFILE.resolve())),  # m2s-bag / the demo on loopback: the shipped profile
        ({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"}, "/etc/my_profile.xml"),  # the user's wins
        ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}, None),  # off loopback: its 127.0.0.1 whitelist would cut DDS
    ],
)
def test_bag_tools_use_the_profile_only_on_loopback(monkeypatch, preset: dict, expected: str | None):
    from m2s_training.bag import use_loopback_dds

    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in preset.items():
        monkeypatch.setenv(name, value)
    use_loopback_dds()
    assert os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") == expected
