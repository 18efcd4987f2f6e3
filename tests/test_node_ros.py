"""The real m2s-segment process over loopback DDS: labelling, bad input, drops, start-up errors, faults."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from sensor_msgs.msg import PointCloud2

from m2s_perception.models import ModelConfig, build_model
from m2s_perception.pointcloud2 import decode_cloud, read_fields
from m2s_training.checkpoint import save_checkpoint
from tests.node_clouds import (
    SMALL_POLAR,
    big_endian,
    expected_labels,
    float64_padded,
    header,
    kitti_f32,
    lidar_points,
    node_parameters,
    ouster_like,
)
from tests.segment_process import CloudClient, SegmentProcess, refused_start_log, serving


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("segment_node")


@pytest.fixture(scope="module")
def running_node(checkpoint, tmp_dir):
    name = "m2s_segment_test"
    # Every warning logged (no throttle): the malformed-message test looks for each problem's text.
    with serving(tmp_dir, name, node_parameters(checkpoint, name, warning_period_s=0.0)) as (node, client):
        yield node, client


@pytest.mark.ros
@pytest.mark.parametrize(
    ("make", "num_points"), [(kitti_f32, 2000), (float64_padded, 1500), (big_endian, 1000), (ouster_like, 1024)]
)
def test_node_labels_every_layout_like_direct_prediction(running_node, segmenter, make, num_points):
    _node, client = running_node
    points = lidar_points(num_points, seed=num_points)
    msg = make(points, sec=num_points)
    out = client.request(msg)

    assert (out.header.frame_id, out.header.stamp.sec, out.header.stamp.nanosec) == (
        msg.header.frame_id,
        msg.header.stamp.sec,
        msg.header.stamp.nanosec,
    )
    assert (out.height, out.width) == (msg.height, msg.width)
    assert [f.name for f in out.fields] == ["x", "y", "z", "intensity", "rgb", "confidence", "label"]
    labels, confidence = expected_labels(segmenter, msg)
    got = read_fields(out, ("x", "label", "confidence"))
    np.testing.assert_array_equal(got["label"].ravel(), labels)
    np.testing.assert_allclose(got["confidence"].ravel(), confidence, atol=1e-5)
    decoded = decode_cloud(msg).points
    np.testing.assert_array_equal(got["x"].ravel(), decoded[:, 0])  # same points, same order (NaN included)
    assert (labels == 0).any() and (labels > 0).any()  # out-of-range / NaN points present and labelled 0


def _bad_messages() -> list[tuple[str, PointCloud2]]:
    good = kitti_f32(lidar_points(100, seed=3), sec=0)
    no_z = kitti_f32(lidar_points(100, seed=3), sec=0)
    no_z.fields = [f for f in no_z.fields if f.name != "z"]
    empty = kitti_f32(lidar_points(100, seed=3), sec=0)
    empty.width, empty.row_step = 0, 0
    empty.data = type(good.data)("B")
    short = kitti_f32(lidar_points(100, seed=3), sec=0)
    short.data = short.data[: len(short.data) // 2]
    unknown = kitti_f32(lidar_points(100, seed=3), sec=0)
    unknown.fields[1].datatype = 42
    all_nan = kitti_f32(np.full((50, 4), np.nan, np.float32), sec=0)
    huge = kitti_f32(lidar_points(30_000, seed=4), sec=0)
    return [
        ("missing field(s) 'z'", no_z),
        ("cloud has no points", empty),
        ("fewer than row_step * height", short),
        ("unknown datatype 42", unknown),
        ("all 50 points are NaN or infinite", all_nan),
        ("more than max_points=20000", huge),
    ]


@pytest.mark.ros
def test_node_survives_malformed_messages(running_node):
    node, client = running_node
    bad = _bad_messages()
    status = f"{node.name}: segmentation"

    def rejected() -> int:
        return int(client.diagnostics.get(status, {}).get("scans_rejected", 0))

    before = rejected()
    for k, (_problem, msg) in enumerate(bad):
        msg.header = header(100 + k)
        client.publisher.publish(msg)  # one at a time: scans sent together would replace each other
        assert client.wait_until(lambda k=k: rejected() == before + k + 1, 10), node.log()
    out = client.request(kitti_f32(lidar_points(500, seed=5), sec=200))
    assert out.width == 500
    assert node.process.poll() is None
    assert not any((100 + k, 1100 + k) in client.outputs for k in range(len(bad)))
    log = node.log()
    for problem, _msg in bad:
        assert problem in log, f"no warning naming {problem!r}; log:\n{log}"
    kinds = client.diagnostics[status]
    counts = {kind: int(kinds[f"rejected_{kind}"]) for kind in ("bad_format", "empty", "no_finite_points", "too_large")}
    assert counts == {"bad_format": 3, "empty": 1, "no_finite_points": 1, "too_large": 1}


@pytest.mark.ros
def test_node_stops_cleanly_on_sigterm(running_node):
    node, client = running_node
    client.request(kitti_f32(lidar_points(100, seed=6), sec=300))  # it is serving
    assert node.stop(signal.SIGTERM) == 0, node.log()


@pytest.mark.ros
def test_stale_scans_are_dropped_not_queued(checkpoint, tmp_dir):
    name, scans = "m2s_segment_slow", 8
    # a DDS history as deep as the burst: every scan reaches the node's callback even when the executor
    # is slow to take them (a loaded machine), so the dropping tested here is the node's own
    parameters = node_parameters(checkpoint, name, debug_delay_s=0.5, input_depth=scans)
    node = SegmentProcess(tmp_dir, name, parameters)
    client = CloudClient(f"/{name}/points", f"/{name}/labelled")
    try:
        client.wait_for_node(node)
        burst = [kitti_f32(lidar_points(500, seed=s), sec=400 + s) for s in range(scans)]
        for msg in burst:
            client.publisher.publish(msg)
            client.wait_until(lambda: False, 0.05)
        last = (burst[-1].header.stamp.sec, burst[-1].header.stamp.nanosec)
        assert client.wait_until(lambda: last in client.outputs, 20), node.log()
        status = f"{name}: segmentation"
        assert client.wait_until(
            lambda: client.diagnostics.get(status, {}).get("scans_processed") == str(len(client.outputs)), 5
        )
        stats = client.diagnostics[status]
        assert len(client.outputs) < len(burst)
        assert int(stats["scans_received"]) == len(burst)
        assert int(stats["scans_dropped"]) == len(burst) - len(client.outputs) > 0
        assert client.output_order[-1] == last  # the newest scan is the one that survived
        assert float(stats["total_ms_p50"]) >= 500.0
        assert node.stop(signal.SIGINT) == 0, node.log()
    finally:
        client.close()
        node.stop(signal.SIGTERM)


@pytest.mark.ros
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"checkpoint": "/nonexistent/model.pt"}, "checkpoint not found: /nonexistent/model.pt"),
        ({"label_format": "names"}, "label_format='names'; expected one of train, raw"),
        ({"chekpoint": "/tmp/model.pt"}, "unknown parameter 'chekpoint' (did you mean 'checkpoint'?)"),
    ],
)
def test_node_refuses_to_start_with_a_clear_error(checkpoint, tmp_dir, override, message):
    name = f"m2s_segment_bad_{next(iter(override))}"
    assert message in refused_start_log(tmp_dir, name, {**node_parameters(checkpoint, name), **override})


class _Payload:
    """Pickled into a checkpoint: loading it would call Path.touch (any callable would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.ros
@pytest.mark.parametrize("problem", ["classes", "pickled_code"])
def test_node_refuses_a_bad_checkpoint(tmp_dir, problem):
    path = tmp_dir / f"{problem}.pt"
    marker = tmp_dir / "payload_ran"
    if problem == "classes":
        config = ModelConfig(**{**SMALL_POLAR.to_dict(), "num_classes": 7})
        save_checkpoint(path, build_model(config), config, class_names=[f"class {i}" for i in range(7)])
        message = "the model predicts 7 classes but the label map has 20"
    else:
        save_checkpoint(path, build_model(SMALL_POLAR), SMALL_POLAR)
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["meta"] = {"payload": _Payload(marker)}
        torch.save(checkpoint, path)
        message = "refused: it holds pickled objects that weights_only loading does not allow"
    name = f"m2s_segment_bad_{problem}"
    assert message in refused_start_log(tmp_dir, name, node_parameters(path, name))
    assert not marker.exists()


@pytest.mark.ros
def test_warnings_are_throttled_per_problem_kind_not_per_text(checkpoint, tmp_dir):
    """Senders control frame ids and field names: varying them must not multiply warnings."""
    name = "m2s_segment_throttle"
    with serving(tmp_dir, name, node_parameters(checkpoint, name)) as (node, client):
        status = f"{name}: segmentation"
        for k in range(6):
            msg = kitti_f32(lidar_points(100, seed=k), sec=500 + k)
            msg.header.frame_id = f"frame_{k}_" + "x" * k
            msg.fields[2].name = f"zz{k}"  # 'z' missing, each time with another field list
            client.publisher.publish(msg)
            assert client.wait_until(
                lambda k=k: int(client.diagnostics.get(status, {}).get("scans_rejected", 0)) == k + 1, 10
            ), node.log()
        warnings = [line for line in node.log().splitlines() if "missing field(s) 'z'" in line]
        assert len(warnings) == 1, "\n".join(warnings)


@pytest.mark.ros
def test_worker_survives_internal_errors_and_reports_them(checkpoint):
    """A failure inside the node (model, publish, bookkeeping) is an ERROR, counted; the worker keeps serving."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from m2s_perception.node import SegmentNode

    name = "m2s_segment_faults"
    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = [Parameter(key, value=value) for key, value in node_parameters(checkpoint, name).items()]
    node = SegmentNode(context=context, parameter_overrides=overrides, cli_args=["--ros-args", "-r", f"__node:={name}"])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = CloudClient(f"/{name}/points", f"/{name}/labelled")
    failures = {"label": 0, "publish": 0}  # armed after the bad-input warning below
    real_label, real_publish = node.labeller.label, node.output_pub.publish

    def failing_label(*args, **kwargs):
        if failures["label"]:
            failures["label"] -= 1
            raise RuntimeError("injected model failure")
        return real_label(*args, **kwargs)

    def failing_publish(msg):
        if failures["publish"]:
            failures["publish"] -= 1
            raise RuntimeError("injected publish failure")
        real_publish(msg)

    node.labeller.label = failing_label
    node.output_pub.publish = failing_publish
    status = f"{name}: segmentation"
    try:
        assert client.wait_until(lambda: client.publisher.get_subscription_count() > 0, 30)
        # Our writer can see the node's reader before that reader has matched our writer, and a sample
        # sent then is lost (seen once in CI: the malformed cloud below never arrived). A round trip,
        # resent until it comes back, makes the path ready first.
        ready = kitti_f32(lidar_points(50, seed=2), sec=598)
        key = (ready.header.stamp.sec, ready.header.stamp.nanosec)
        for _ in range(20):
            client.publisher.publish(ready)
            if client.wait_until(lambda: key in client.outputs, 1.0):
                break
        assert key in client.outputs, "the node never answered"
        # a bad-input warning first: rclpy refuses a logging call site that changes severity, which
        # once killed the worker when the ERROR of an internal error followed a WARN from the same line
        malformed = kitti_f32(lidar_points(100, seed=1), sec=599)
        malformed.fields[2].name = "zz"
        client.publisher.publish(malformed)
        assert client.wait_until(lambda: int(client.diagnostics.get(status, {}).get("scans_rejected", 0)) == 1, 10)
        failures.update(label=1, publish=1)
        for sec in (600, 601):  # the first fails in the model, the second in publish
            client.publisher.publish(kitti_f32(lidar_points(200, seed=sec), sec=sec))
            assert client.wait_until(
                lambda sec=sec: int(client.diagnostics.get(status, {}).get("internal_errors", 0)) == sec - 599, 10
            ), client.diagnostics.get(status)
        level, message = client.levels[status]
        assert level == 2 and "internal error" in message, (level, message)
        out = client.request(kitti_f32(lidar_points(300, seed=7), sec=602))  # still serving
        assert out.width == 300
        assert node._worker.is_alive()
        assert int(client.diagnostics[status]["scans_rejected"]) == 1  # the malformed one only: not blamed on the input
    finally:
        client.close()
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.ros
def test_label_map_parameter_sets_the_classes_the_node_labels_with(tmp_dir):
    """A checkpoint trained for another label map: refused with the packaged map, served with its own."""
    from tests.test_config import small_label_map

    label_map = small_label_map(tmp_dir)  # unlabeled, car, road
    config = ModelConfig(**{**SMALL_POLAR.to_dict(), "num_classes": 3})
    path = tmp_dir / "car_road.pt"
    torch.manual_seed(0)
    save_checkpoint(path, build_model(config), config, class_names=["unlabeled", "car", "road"])

    log = refused_start_log(tmp_dir, "m2s_segment_map_refused", node_parameters(path, "m2s_segment_map_refused"))
    assert "the model predicts 3 classes but the label map has 20" in log

    name = "m2s_segment_map"
    parameters = node_parameters(path, name, label_map=str(label_map), label_format="raw")
    with serving(tmp_dir, name, parameters) as (_node, client):
        out = client.request(kitti_f32(lidar_points(400, seed=3), sec=700))
    raw_labels = set(np.unique(read_fields(out, ["label"])["label"]).tolist())
    assert raw_labels <= {0, 10, 40}, raw_labels  # the small map's raw ids: unlabeled, car, road


@pytest.mark.ros
def test_ensemble_members_parameter_runs_the_first_networks(tmp_dir):
    """An ensemble checkpoint served whole and with ensemble_members: 1; each labels as Segmenter does."""
    from m2s_perception.inference import Segmenter
    from m2s_training.ensemble import assemble

    members = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        members.append(tmp_dir / f"member{seed}.pt")
        save_checkpoint(members[-1], build_model(SMALL_POLAR), SMALL_POLAR)
    ensemble = tmp_dir / "pair.pt"
    assemble(members, ensemble)
    msg = kitti_f32(lidar_points(1500, seed=11), sec=900)
    for count, alone in (
        (0, Segmenter.from_checkpoint(ensemble, "cpu")),
        (1, Segmenter.from_checkpoint(members[0], "cpu")),
    ):
        name = f"m2s_segment_members_{count}"
        with serving(tmp_dir, name, node_parameters(ensemble, name, ensemble_members=count)) as (_node, client):
            out = client.request(msg)
        labels, _ = expected_labels(alone, msg)
        assert np.array_equal(read_fields(out, ["label"])["label"].ravel(), labels), count
    whole, first = Segmenter.from_checkpoint(ensemble, "cpu"), Segmenter.from_checkpoint(members[0], "cpu")
    points = lidar_points(1500, seed=11)
    assert np.mean(whole.predict(points).labels != first.predict(points).labels) > 0.01  # the two runs differ
