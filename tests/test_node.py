"""The segmentation node's ROS-free parts: pipeline, parameter table, launch and config files."""

from __future__ import annotations

import ast
import sys
import threading

import numpy as np
import pytest
import torch
import yaml
from sensor_msgs.msg import PointCloud2, PointField

from m2s_perception import node_params
from m2s_perception.labels import load_label_map
from m2s_perception.node_health import LatestScanSlot
from m2s_perception.pipeline import LabelSettings, ScanLabeller, ScanRejected, intensity_problem, resolve_checkpoint
from m2s_perception.pointcloud2 import decode_cloud, make_cloud, read_fields
from tests.node_clouds import (
    header,
    lidar_points,
    ouster_like,
)
from tests.segment_process import REPO, segment_command


def test_latest_scan_slot_keeps_only_the_newest():
    slot = LatestScanSlot()
    assert slot.take(timeout=0.01) is None
    slot.put("a")
    slot.put("b")
    slot.put("c")
    assert slot.dropped == 2
    assert slot.take(timeout=0.01) == "c"
    assert slot.take(timeout=0.01) is None
    slot.put("d")
    assert (slot.take(timeout=0.01), slot.dropped) == ("d", 2)


def test_latest_scan_slot_close_wakes_a_waiting_worker():
    slot = LatestScanSlot()
    result = []
    worker = threading.Thread(target=lambda: result.append(slot.take(timeout=10.0)))
    worker.start()
    slot.close()
    worker.join(timeout=2.0)
    assert not worker.is_alive()
    assert result == [None]


def test_intensity_problem_hints():
    assert intensity_problem(np.array([0.1, 0.5, 0.9], np.float32), 1.0) is None
    assert "intensity_scale" in intensity_problem(np.array([10.0, 200.0, 250.0], np.float32), 1.0)
    assert "set intensity_scale: 1.0" in intensity_problem(np.array([0.1, 0.5, 0.9], np.float32) / 255, 255.0)
    assert "negative" in intensity_problem(np.array([-3.0, 0.5], np.float32), 1.0)


def test_resolve_checkpoint(tmp_path, checkpoint):
    assert resolve_checkpoint(str(checkpoint)) == checkpoint
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nope\.pt"):
        resolve_checkpoint(str(tmp_path / "nope.pt"))


def test_labeller_raw_labels_colours_and_filters(segmenter):
    labeller = ScanLabeller(segmenter, load_label_map(), PointCloud2, PointField)
    points = lidar_points(300, seed=1)
    points[5, :3] = np.nan
    columns = {name: points[:, k].copy() for k, name in enumerate(("x", "y", "z", "intensity"))}
    msg = make_cloud(PointCloud2, PointField, header(7), columns)
    settings = LabelSettings(intensity_scale=255.0, min_range=5.0, max_range=40.0, label_format="raw")
    out = labeller.label(msg, settings).cloud
    fields = read_fields(out, ("label", "rgb", "intensity"))
    distance = np.linalg.norm(points[:, :3], axis=1)
    with np.errstate(invalid="ignore"):
        selected = (distance >= 5.0) & (distance <= 40.0)
    expected_train = np.zeros(300, np.uint8)
    expected_train[selected] = segmenter.predict(decode_cloud(msg, 255.0).points[selected]).labels
    label_map = load_label_map()
    np.testing.assert_array_equal(fields["label"].ravel(), label_map.to_raw(expected_train))
    assert fields["label"].ravel()[5] == 0 and not selected[5]
    rgb = fields["rgb"].ravel().view(np.uint32)
    expected_rgb = label_map.train_rgb[expected_train].astype(np.uint32)
    np.testing.assert_array_equal(rgb, (expected_rgb[:, 0] << 16) | (expected_rgb[:, 1] << 8) | expected_rgb[:, 2])
    np.testing.assert_allclose(fields["intensity"].ravel(), points[:, 3], rtol=1e-6)  # sensor units kept


def test_labeller_rejects_bad_scans(segmenter):
    labeller = ScanLabeller(segmenter, load_label_map(), PointCloud2, PointField)
    nan = np.full(4, np.nan, np.float32)
    all_nan = make_cloud(PointCloud2, PointField, header(1), {"x": nan, "y": nan, "z": nan})
    with pytest.raises(ScanRejected, match="all 4 points are NaN") as rejected:
        labeller.label(all_nan, LabelSettings())
    assert rejected.value.kind == "no_finite_points"
    with pytest.raises(ScanRejected, match="more than max_points=3"):
        labeller.label(all_nan, LabelSettings(max_points=3))


def test_labeller_keeps_every_input_field_when_asked(segmenter):
    labeller = ScanLabeller(segmenter, load_label_map(), PointCloud2, PointField)
    for big in (False, True):
        msg = ouster_like(lidar_points(640, seed=11), sec=8, big=big)
        plain = labeller.label(msg, LabelSettings(intensity_scale=255.0)).cloud
        kept = labeller.label(msg, LabelSettings(intensity_scale=255.0, keep_input_fields=True)).cloud
        assert [f.name for f in kept.fields] == ["x", "y", "z", "t", "reflectivity", "ring", "rgb", "label"]
        assert (kept.height, kept.width, kept.is_bigendian) == (16, 40, big)
        assert kept.point_step % 4 == 0 and kept.row_step == kept.point_step * 40
        got, want = (
            read_fields(kept, ("x", "ring", "reflectivity", "label")),
            read_fields(msg, ("x", "ring", "reflectivity")),
        )
        np.testing.assert_array_equal(got["x"], want["x"])  # NaN where the input has NaN
        np.testing.assert_array_equal(got["ring"], want["ring"])
        np.testing.assert_array_equal(got["reflectivity"], want["reflectivity"])
        np.testing.assert_array_equal(got["label"], read_fields(plain, ("label",))["label"])


def test_filtered_cloud_is_the_input_layout_without_the_classes(segmenter):
    label_map = load_label_map()
    labeller = ScanLabeller(segmenter, label_map, PointCloud2, PointField)
    msg = ouster_like(lidar_points(640, seed=12), sec=9)
    labels = read_fields(labeller.label(msg, LabelSettings(intensity_scale=255.0)).cloud, ("label",))["label"].ravel()
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    removed = ids[np.argsort(counts)[-2:]]  # the two most frequent predicted classes
    names = tuple(label_map.class_names[i] for i in removed)
    settings = LabelSettings(intensity_scale=255.0, filtered_classes=names)
    scan = labeller.label(msg, settings, labelled=False, filtered=True)
    assert scan.cloud is None
    out = scan.filtered
    keep = ~np.isin(labels, removed)
    assert 0 < keep.sum() < len(labels)
    assert (out.height, out.width, out.point_step) == (1, int(keep.sum()), msg.point_step)
    assert [(f.name, f.offset, f.datatype) for f in out.fields] == [(f.name, f.offset, f.datatype) for f in msg.fields]
    got = read_fields(out, ("x", "ring", "t")).ravel()
    want = read_fields(msg, ("x", "ring", "t")).ravel()[keep]
    np.testing.assert_array_equal(got["x"], want["x"])
    np.testing.assert_array_equal(got["ring"], want["ring"])
    assert (labels[keep] == 0).any()  # unlabeled (NaN) points stay unless 'unlabeled' is filtered


def test_console_script_is_declared():
    assert "m2s-segment = m2s_perception.node:main" in (REPO / "setup.py").read_text()
    assert segment_command()


def test_params_file_matches_the_parameter_table():
    """config/segment.yaml lists exactly the node's parameters, each with the table's default and type."""
    params = yaml.safe_load((REPO / "config/segment.yaml").read_text())["/**"]["ros__parameters"]
    table = node_params.defaults()
    assert list(params) == list(table)
    for name, value in params.items():
        assert value == table[name] and type(value) is type(table[name]), (name, value, table[name])
    assert node_params.validate(params, load_label_map().class_names) == []
    assert params["input_reliability"] == "best_effort" and params["input_depth"] == 1  # sensor-data QoS


def test_parameter_table_validation():
    ok = node_params.defaults()
    classes = load_label_map().class_names
    assert node_params.validate({**ok, "filtered_classes": ["road", "terrain"]}, classes) == []
    assert node_params.validate({**ok, "max_points": 0}) == ["parameter max_points=0; expected 1..1e+08"]
    assert node_params.validate({**ok, "intensity_scale": 255}) == []  # an int where a float is declared
    assert node_params.validate({**ok, "label_format": "names"}) == [
        "parameter label_format='names'; expected one of train, raw"
    ]
    assert node_params.validate({**ok, "min_range": 5.0, "max_range": 5.0}) == [
        "min_range 5.0 must be below max_range 5.0"
    ]
    assert node_params.validate({**ok, "filtered_classes": ["road", "lava"]}, classes)[0].startswith(
        "filtered_classes: unknown class(es) 'lava'"
    )
    assert node_params.validate({**ok, "publish_confidence": 1}) == ["parameter publish_confidence=1; expected a bool"]
    assert node_params.unknown_parameters(["chekpoint", "use_sim_time", "zzz"], ["use_sim_time"]) == [
        "unknown parameter 'chekpoint' (did you mean 'checkpoint'?)",
        "unknown parameter 'zzz'",
    ]


def test_launch_file_declares_its_arguments():
    source = (REPO / "launch/segment.launch.py").read_text()
    tree = ast.parse(source)
    compile(tree, "segment.launch.py", "exec")
    declared = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "DeclareLaunchArgument"
    }
    assert declared == {
        "params_file",
        "checkpoint",
        "input_topic",
        "output_topic",
        "filtered_topic",
        "namespace",
        "node_name",
        "device",
        "intensity_scale",
        "ensemble_members",
        "log_level",
        "use_sim_time",
        "rviz",
        "fixed_frame",
    }
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    assert '"m2s-segment"' in source and '"m2s.rviz"' in source


def test_rviz_config_shows_the_clouds_best_effort():
    doc = yaml.safe_load((REPO / "config/m2s.rviz").read_text())
    displays = {
        d["Name"]: d
        for d in doc["Visualization Manager"]["Displays"]
        if d["Class"] == "rviz_default_plugins/PointCloud2"
    }
    topics = {d["Topic"]["Value"]: d for d in displays.values()}
    assert set(topics) == {"/velodyne_points", "/m2s/labelled_points", "/m2s/filtered_points"}
    assert not topics["/m2s/filtered_points"]["Enabled"]  # disabled: no subscriber, so the node skips that work
    labelled = topics["/m2s/labelled_points"]
    assert labelled["Color Transformer"] == "RGB8"
    assert all(d["Topic"]["Reliability Policy"] == "Best Effort" for d in topics.values())


def test_package_xml_lists_every_ros_package_the_node_imports():
    import xml.etree.ElementTree as ElementTree

    sources = [*(REPO / "m2s_perception").rglob("*.py"), *(REPO / "launch").glob("*.py")]
    imported = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    from_pip = {"numpy", "yaml", "torch", "tqdm", "matplotlib", "spconv", "m2s_perception"}
    ros = imported - set(sys.stdlib_module_names) - from_pip
    assert {"rclpy", "rcl_interfaces", "sensor_msgs", "diagnostic_msgs", "launch", "launch_ros"} <= ros
    manifest = ElementTree.parse(REPO / "package.xml").getroot()
    exec_depends = {e.text for e in manifest.iter("exec_depend")}
    assert ros <= exec_depends, f"imported but not in package.xml: {sorted(ros - exec_depends)}"
    assert {"rviz2", "std_msgs"} <= exec_depends  # rviz2: launched by rviz:=true; std_msgs: Header
    assert {"python3-pytest", "rclpy"} <= {e.text for e in manifest.iter("test_depend")}


def test_load_segmenter_backend_and_threads(checkpoint):
    from m2s_perception.pipeline import load_segmenter

    with pytest.raises(ValueError, match="no_such_backend"):
        load_segmenter(checkpoint, "cpu", "auto", backend="no_such_backend")
    threads = torch.get_num_threads()
    try:
        wanted = 3 if threads != 3 else 2
        segmenter = load_segmenter(checkpoint, "cpu", "fp32", num_threads=wanted)
        assert segmenter.predict(np.ones((5, 4), np.float32)).labels.shape == (5,)
        assert torch.get_num_threads() == wanted  # set by the torch backend
    finally:
        torch.set_num_threads(threads)


def test_load_segmenter_runs_the_first_networks_of_the_demo_ensemble():
    from m2s_perception.pipeline import load_segmenter
    from m2s_perception.resources import DEMO_CHECKPOINT

    assert load_segmenter(DEMO_CHECKPOINT, "cpu", "fp32").config.members == 4  # the shipped weights: 4 students
    assert load_segmenter(DEMO_CHECKPOINT, "cpu", "fp32", ensemble_members=0).config.members == 4  # 0: all
    assert load_segmenter(DEMO_CHECKPOINT, "cpu", "fp32", ensemble_members=1).config.members == 1
    with pytest.raises(ValueError, match="holds 4 network"):
        load_segmenter(DEMO_CHECKPOINT, "cpu", "fp32", ensemble_members=5)


def test_labeller_outputs_survive_random_layouts(segmenter):
    """Seeded random layouts (extra fields of every datatype, names clashing with ours, duplicates, big-endian,
    organised, huge and non-finite values): every cloud is labelled or rejected as bad input, and both
    optional outputs keep the input's points."""
    import array

    rng = np.random.default_rng(0)
    labeller = ScanLabeller(segmenter, load_label_map(), PointCloud2, PointField)
    names = ["ring", "t", "rgb", "label", "confidence", "intensity", "x", "noise"]
    labelled = rejected = 0
    for _ in range(300):
        fields = [PointField(name=n, offset=4 * k, datatype=7, count=1) for k, n in enumerate("xyz")]
        offset = 12
        for _extra in range(rng.integers(0, 4)):
            datatype = int(rng.integers(1, 9))
            size = (1, 1, 2, 2, 4, 4, 4, 8)[datatype - 1]
            offset = -(-offset // size) * size
            fields.append(PointField(name=str(rng.choice(names)), offset=offset, datatype=datatype, count=1))
            offset += size
        height = int(rng.choice([1, 2, 4]))
        width = int(rng.integers(1, 50))
        point_step = offset + int(rng.integers(0, 9))
        row_step = width * point_step + int(rng.choice([0, 0, 8]))
        values = rng.normal(0, 20, (row_step * height + 3) // 4).astype(np.float32)
        values[rng.random(len(values)) < 0.05] = rng.choice([np.nan, np.inf, 3e38])
        msg = PointCloud2(height=height, width=width, point_step=point_step, row_step=row_step, fields=fields)
        msg.is_bigendian = bool(rng.random() < 0.3)
        msg.data = array.array("B", values.tobytes()[: row_step * height])
        settings = LabelSettings(keep_input_fields=bool(rng.random() < 0.5), filtered_classes=("road", "car"))
        try:
            scan = labeller.label(msg, settings, labelled=True, filtered=True)
        except ScanRejected as err:
            assert err.kind in ("bad_format", "no_finite_points"), err
            rejected += 1
            continue
        labelled += 1
        assert (scan.cloud.height, scan.cloud.width) == (height, width)
        assert len(scan.cloud.data) == scan.cloud.row_step * height
        assert read_fields(scan.cloud, ("label",)).shape == (height, width)
        assert scan.filtered.point_step == point_step and scan.filtered.width <= width * height
        assert len(scan.filtered.data) == scan.filtered.width * point_step
    assert labelled > 200 and rejected > 0, (labelled, rejected)
