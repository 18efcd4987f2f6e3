"""The node's ROS interface over real DDS: remapped relative topics, the labelled and filtered
outputs, no work without subscribers, QoS overrides, diagnostics thresholds, Humble's rclpy surface."""

from __future__ import annotations

import signal
import sys
import time

import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

from m2s_perception.labels import load_label_map
from m2s_perception.pointcloud2 import read_fields
from tests.node_clouds import expected_labels, kitti_f32, lidar_points, node_parameters, ouster_like
from tests.segment_process import CloudClient, SegmentProcess

pytestmark = pytest.mark.ros
WARN, ERROR = 1, 2


def parameters(checkpoint, name: str, **overrides) -> dict:
    """The test parameters, topics left at the node's relative defaults (points, labelled_points, …)."""
    values = node_parameters(checkpoint, name, **overrides)
    del values["input_topic"], values["output_topic"]
    return values


def status_of(client: CloudClient, name: str) -> tuple[dict, int, str]:
    key = f"{name}: segmentation"
    level, message = client.levels.get(key, (-1, ""))
    return client.diagnostics.get(key, {}), level, message


def test_remapped_topics_filtered_cloud_and_no_work_without_subscribers(checkpoint, segmenter, tmp_path):
    name = "m2s_segment_outputs"
    remaps = ["-r", f"points:=/{name}/in", "-r", f"labelled_points:=/{name}/out", "-r", f"filtered_points:=/{name}/nog"]
    ground = ["road", "sidewalk", "parking", "other-ground", "terrain"]
    params = parameters(checkpoint, name, keep_input_fields=True, filtered_classes=ground)
    node = SegmentProcess(tmp_path, name, params, ros_args=remaps)
    client = CloudClient(f"/{name}/in", f"/{name}/nobody_listens_here")
    try:
        client.wait_for_node(node, output=False)  # the node subscribes to the remapped input; we listen elsewhere
        for sec in (1, 2, 3):  # nobody subscribes to out or nog: counted, not segmented
            client.publisher.publish(ouster_like(lidar_points(640, seed=sec), sec=sec))
            assert client.wait_until(
                lambda sec=sec: status_of(client, name)[0].get("scans_skipped_no_subscribers") == str(sec), 10
            ), node.log()
        values, _level, message = status_of(client, name)
        assert values["scans_processed"] == "0" and "idle: no subscriber" in message

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        labelled, filtered = {}, {}
        client.node.create_subscription(
            PointCloud2, f"/{name}/out", lambda m: labelled.update({m.header.stamp.sec: m}), reliable
        )
        client.node.create_subscription(
            PointCloud2, f"/{name}/nog", lambda m: filtered.update({m.header.stamp.sec: m}), reliable
        )
        sec = 10
        msg = ouster_like(lidar_points(640, seed=99), sec=sec)
        while not (sec in labelled and sec in filtered):  # until the node has matched both subscriptions
            assert sec < 60, node.log()
            sec += 1
            msg = ouster_like(lidar_points(640, seed=99), sec=sec)
            client.publisher.publish(msg)
            client.wait_until(lambda sec=sec: sec in labelled and sec in filtered, 1.0)

        out, kept = labelled[sec], filtered[sec]
        assert [f.name for f in out.fields] == [
            "x",
            "y",
            "z",
            "t",
            "reflectivity",
            "ring",
            "rgb",
            "confidence",
            "label",
        ]
        np.testing.assert_array_equal(read_fields(out, ("ring",))["ring"], read_fields(msg, ("ring",))["ring"])
        labels, _confidence = expected_labels(segmenter, msg)
        np.testing.assert_array_equal(read_fields(out, ("label",))["label"].ravel(), labels)
        ground_ids = [load_label_map().class_id(c) for c in ground]
        keep = ~np.isin(labels, ground_ids)
        assert (kept.point_step, kept.height, kept.width) == (msg.point_step, 1, int(keep.sum()))
        assert [f.name for f in kept.fields] == [f.name for f in msg.fields]
        want = read_fields(msg, ("x", "reflectivity")).ravel()[keep]
        got = read_fields(kept, ("x", "reflectivity")).ravel()
        np.testing.assert_array_equal(got["x"], want["x"])
        np.testing.assert_array_equal(got["reflectivity"], want["reflectivity"])
        assert node.stop(signal.SIGINT) == 0, node.log()
    finally:
        client.close()
        node.stop(signal.SIGTERM)


def test_qos_override_and_no_input_diagnostics_name_the_publishers(checkpoint, tmp_path):
    """A best-effort driver and an input overridden to reliable: nothing arrives, and diagnostics say why."""
    name = "m2s_segment_qos"
    override = ["-r", f"__ns:=/{name}", "-p", f"qos_overrides./{name}/points.subscription.reliability:=reliable"]
    params = parameters(checkpoint, name, input_reliability="best_effort", input_timeout_s=1.0)
    node = SegmentProcess(tmp_path, name, params, ros_args=override)
    client = CloudClient(f"/{name}/unused_in", f"/{name}/labelled_points")
    best_effort = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    driver = client.node.create_publisher(PointCloud2, f"/{name}/points", best_effort)
    try:
        assert client.wait_until(
            lambda: (
                bool(client.node.get_subscriptions_info_by_topic(f"/{name}/points")) or node.process.poll() is not None
            ),
            60,
        ), node.log()
        (info,) = client.node.get_subscriptions_info_by_topic(f"/{name}/points")
        assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # the override won over the parameter
        driver.publish(kitti_f32(lidar_points(100, seed=1), sec=1))
        # the writer is discovered before its node's name: wait for the report that names it
        named = "/m2s_test_client (best_effort, incompatible with this node's reliable input)"
        assert client.wait_until(lambda: named in status_of(client, name)[2], 15), node.log()
        values, level, message = status_of(client, name)
        assert level == WARN and values["scans_received"] == "0"
        assert f"no scan yet on /{name}/points for" in message
        assert "/m2s_test_client (best_effort, incompatible with this node's reliable input)" in message
    finally:
        client.close()
        node.stop(signal.SIGTERM)


def test_publisher_names_never_show_rclpy_placeholders():
    from m2s_perception.node import publisher_name

    assert publisher_name("/", "driver") == "/driver"
    assert publisher_name("/lidar/", "driver") == "/lidar/driver"
    unknown = publisher_name("_NODE_NAMESPACE_UNKNOWN_", "_NODE_NAME_UNKNOWN_")
    assert unknown == "a node not yet discovered"


def test_diagnostics_levels_follow_the_thresholds(checkpoint, tmp_path):
    name = "m2s_segment_health"
    params = parameters(
        checkpoint, name, debug_delay_s=0.2, max_processing_ms=100.0, max_delay_ms=2000.0, input_timeout_s=1.5
    )
    node = SegmentProcess(tmp_path, name, params, ros_args=["-r", f"__ns:=/{name}"])  # relative topics move along
    client = CloudClient(f"/{name}/points", f"/{name}/labelled_points")

    def send(seconds: float, age_s: float) -> int:
        """Publish at ~4 Hz for ``seconds``, stamped ``age_s`` before now; returns how many."""
        sent, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            msg = kitti_f32(lidar_points(200, seed=sent), sec=0)
            stamp = client.node.get_clock().now().nanoseconds - int(age_s * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            client.publisher.publish(msg)
            sent += 1
            client.wait_until(lambda: False, 0.25)
        return sent

    try:
        client.wait_for_node(node)
        send(2.0, age_s=0.0)  # fresh scans, each ≥ 200 ms to process: over max_processing_ms
        values, level, message = status_of(client, name)
        assert level == WARN and "over max_processing_ms=100" in message, (level, message)
        assert 2.0 < float(values["input_rate_hz"]) < 5.0, values["input_rate_hz"]
        assert float(values["total_ms_p50"]) >= 200.0
        send(4.0, age_s=5.0)  # every scan 5 s old for longer than 3 s: sustained delay
        level, message = status_of(client, name)[1:]
        assert level == ERROR and "over max_delay_ms=2000" in message, (level, message)
        assert client.wait_until(lambda: "no scans on" in status_of(client, name)[2], 10)  # the input stops
        level, message = status_of(client, name)[1:]
        assert level == ERROR and f"no scans on /{name}/points for" in message
        assert "/m2s_test_client (reliable)" in message
    finally:
        client.close()
        node.stop(signal.SIGTERM)


def set_parameter(client: CloudClient, node_name: str, name: str, value: str) -> bool:
    service = client.node.create_client(SetParameters, f"/{node_name}/set_parameters")
    assert client.wait_until(service.service_is_ready, 10)
    request = SetParameters.Request()
    request.parameters = [
        ParameterMsg(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))
    ]
    future = service.call_async(request)
    assert client.wait_until(future.done, 10)
    return future.result().results[0].successful


@pytest.mark.parametrize("surface", ["installed", "humble"])
def test_node_labels_and_applies_parameters_on_each_rclpy_surface(checkpoint, segmenter, tmp_path, surface):
    """On the installed rclpy and with newer-than-Humble API removed: it labels, and run-time parameters apply."""
    name = f"m2s_segment_{surface}"
    command = [sys.executable, "-m", "tests.humble_rclpy"] if surface == "humble" else []
    node = SegmentProcess(tmp_path, name, node_parameters(checkpoint, name), command=command)
    client = CloudClient(f"/{name}/points", f"/{name}/labelled")
    try:
        client.wait_for_node(node)
        if surface == "humble":
            removed = "removed Node.add_pre_set_parameters_callback, Node.add_post_set_parameters_callback"
            assert removed in node.log() and "rclpy.try_shutdown" in node.log()
        msg = kitti_f32(lidar_points(1000, seed=5), sec=5)
        labels, _confidence = expected_labels(segmenter, msg)
        np.testing.assert_array_equal(read_fields(client.request(msg), ("label",))["label"].ravel(), labels)

        assert not set_parameter(client, name, "label_format", "names")  # validation still refuses
        assert set_parameter(client, name, "label_format", "raw")  # applied without a post-set callback
        msg = kitti_f32(lidar_points(1000, seed=5), sec=6)
        raw = read_fields(client.request(msg), ("label",))["label"].ravel()
        np.testing.assert_array_equal(raw, load_label_map().to_raw(labels))
        assert node.stop(signal.SIGINT) == 0, node.log()
    finally:
        client.close()
        node.stop(signal.SIGTERM)
