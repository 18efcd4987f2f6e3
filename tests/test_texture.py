"""Surface texture along the scan line (m2s_perception/texture.py) and the models that eat it: hand-made
rings with known range steps, and every path (training network, numpy binning, fused network, ONNX,
Segmenter, dataset) giving the texture to the network the same way."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from test_dataset import write_sequence
from test_export import cloud_with_edges, reference, trained_like
from test_models import SMALL_GRID

from m2s_perception.binning import PolarBinning
from m2s_perception.inference import Segmenter, labels_from_logits
from m2s_perception.models import ModelConfig, build_model
from m2s_perception.models.grid import CylindricalGrid
from m2s_perception.models.polar_fused import FusedPolarNet
from m2s_perception.texture import ring_texture, with_texture
from m2s_training.data.dataset import SemanticKittiDataset
from m2s_training.data.semantic_kitti import write_scan

ROUGH_STEP = 0.005
CONFIG = ModelConfig(width=0.5, texture_step=ROUGH_STEP, **SMALL_GRID)


def ring(ranges: np.ndarray, elevation_deg: float = -10.0, step_deg: float = 0.18, remission: float = 0.3):
    """One beam's points, azimuth step ``step_deg`` apart, at the given ranges (sensor order)."""
    azimuth = np.radians(step_deg) * np.arange(len(ranges))
    elevation = np.radians(elevation_deg)
    horizontal = ranges * np.cos(elevation)
    return np.stack(
        [
            horizontal * np.cos(azimuth),
            horizontal * np.sin(azimuth),
            ranges * np.sin(elevation),
            np.full(len(ranges), remission),
        ],
        axis=1,
    ).astype(np.float32)


def test_a_smooth_ring_reads_zero_and_an_alternating_one_its_relative_step():
    assert np.all(ring_texture(ring(np.full(50, 20.0)), ROUGH_STEP) < 1e-4)
    # ranges 20.02, 19.98, 20.02, ...: every step is 0.04 m over the nearer 19.98 m = 0.2002 % of
    # the range; over ROUGH_STEP (0.5 %) that reads 0.4004 for every point, the ends included.
    ranges = 20.0 + 0.02 * (-1.0) ** np.arange(40)
    np.testing.assert_allclose(ring_texture(ring(ranges), ROUGH_STEP), 0.04 / 19.98 / ROUGH_STEP, rtol=2e-3)
    # ten times rougher than ROUGH_STEP: clipped to 1
    np.testing.assert_allclose(ring_texture(ring(20.0 + 0.5 * (-1.0) ** np.arange(40)), ROUGH_STEP), 1.0)


def test_a_floor_makes_everything_smoother_than_it_read_zero():
    ranges = 20.0 + 0.02 * (-1.0) ** np.arange(40)  # steps of 0.04 / 19.98 = 0.2002 % of the range
    # ramp 0.15 % → 0, 0.30 % → 1: (0.2002 - 0.15) / 0.15 = 0.3347
    np.testing.assert_allclose(ring_texture(ring(ranges), 0.003, smooth_step=0.0015), 0.3347, atol=2e-4)
    assert np.all(ring_texture(ring(ranges), 0.003, smooth_step=0.0025) == 0.0)
    with pytest.raises(ValueError, match="texture_floor"):
        ModelConfig(texture_step=0.002, texture_floor=0.002)


def test_each_point_takes_the_median_of_the_four_steps_around_it():
    # steps (relative to the nearer range) 0.1 %, 0.1 %, 0.3 %, 0.1 %, 0.1 % between six points at ~10 m:
    # point 2 sees steps 0, 1, 2, 3 → median of (0.1, 0.1, 0.3, 0.1) % = 0.1 %; point 0 sees only steps
    # 0 and 1 (0.1 %); point 3 sees 1, 2, 3, 4 → 0.1 %: one rough pair does not make a rough point.
    ranges = [10.0]
    for relative in (0.001, 0.001, 0.003, 0.001, 0.001):
        ranges.append(ranges[-1] * (1 + relative))  # growing: the nearer range is the previous one
    texture = ring_texture(ring(np.array(ranges)), ROUGH_STEP)
    np.testing.assert_allclose(texture, 0.001 / ROUGH_STEP, rtol=1e-3)


def test_points_of_different_beams_or_far_apart_in_azimuth_are_not_neighbours():
    rough = 20.0 + 0.02 * (-1.0) ** np.arange(6)
    # column-major order (as some drivers write): consecutive points on beams 0.4° apart → no pair
    columns = np.concatenate([ring(rough[i : i + 1], elevation_deg=-10.0 - 0.4 * i) for i in range(6)])
    assert np.all(ring_texture(columns, ROUGH_STEP) == 0.0)
    # the same beam, but 2° between returns (a gap in the scan): no pair either
    assert np.all(ring_texture(ring(rough, step_deg=2.0), ROUGH_STEP) == 0.0)
    # crossing azimuth ±180°: still neighbours
    wrapped = ring(rough, step_deg=0.18)
    angle = math.pi - np.radians(0.18) * 3 + np.radians(0.18) * np.arange(6)
    horizontal = np.hypot(wrapped[:, 0], wrapped[:, 1])
    wrapped[:, 0], wrapped[:, 1] = horizontal * np.cos(angle), horizontal * np.sin(angle)
    assert np.all(ring_texture(wrapped, ROUGH_STEP) > 0.3)


def test_tiny_clouds_and_the_fifth_column():
    assert ring_texture(np.zeros((0, 4), np.float32), ROUGH_STEP).shape == (0,)
    assert ring_texture(np.ones((1, 4), np.float32), ROUGH_STEP).tolist() == [0.0]
    points = ring(20.0 + 0.02 * (-1.0) ** np.arange(10))
    five = with_texture(points, ROUGH_STEP)
    assert five.shape == (10, 5) and five.dtype == np.float32
    np.testing.assert_array_equal(five[:, :4], points)
    np.testing.assert_array_equal(five[:, 4], ring_texture(points, ROUGH_STEP))


def textured_cloud(num_points: int, seed: int) -> np.ndarray:
    cloud = cloud_with_edges(num_points, seed)
    texture = np.random.default_rng(seed).uniform(0, 1, (len(cloud), 1)).astype(np.float32)
    return np.concatenate([cloud, texture], axis=1)


def test_the_network_uses_the_texture_and_a_model_without_it_ignores_a_fifth_column():
    points = torch.from_numpy(textured_cloud(600, 1))
    batch = (torch.zeros(len(points), dtype=torch.long), 1)
    with_feature = trained_like(CONFIG)
    smoother = points.clone()
    smoother[:, 4] = 0.0
    with torch.inference_mode():
        assert not torch.allclose(
            with_feature(points, *batch).point_logits, with_feature(smoother, *batch).point_logits
        )
        with pytest.raises(ValueError, match="5 columns"):
            with_feature(points[:, :4], *batch)
        without = trained_like(dataclasses.replace(CONFIG, texture_step=None))
        torch.testing.assert_close(without(points, *batch).point_logits, without(points[:, :4], *batch).point_logits)


def test_binning_fused_network_and_onnx_give_the_texture_as_the_training_network_does():
    points = textured_cloud(1500, 3)
    binned = PolarBinning(CONFIG)(points)
    location = CylindricalGrid(CONFIG.grid_size, CONFIG.rho_range, CONFIG.z_range).locate(torch.from_numpy(points))
    assert binned.features.shape == (10, len(points))
    np.testing.assert_allclose(binned.features, location.features.numpy().T, atol=1e-6)
    np.testing.assert_array_equal(binned.features[9], points[:, 4])

    model = trained_like(CONFIG, seed=2)
    inputs = [torch.from_numpy(a) for a in (binned.features, binned.point_cell, binned.point_voxel, binned.cells)]
    with torch.inference_mode():
        _, _, logits = FusedPolarNet(model)(*inputs)
    torch.testing.assert_close(logits, reference(model, points), atol=2e-5, rtol=1e-4)

    pytest.importorskip("onnxruntime")
    from m2s_perception.backends import OnnxRuntimeBackend
    from m2s_perception.export import export_onnx

    engine = OnnxRuntimeBackend(export_onnx(model, CONFIG), "cpu", 1)
    out = engine.run(PolarBinning(CONFIG)(points))
    np.testing.assert_allclose(out.point_logits, reference(model, points).numpy(), atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_segmenter_measures_the_texture_on_the_points_as_given(backend: str):
    if backend != "torch":
        pytest.importorskip(backend)
    model = trained_like(CONFIG, seed=4)
    # two beams of a rough and a smooth surface, in sensor order, then a few scattered points
    scan = np.concatenate([ring(15.0 + 0.03 * (-1.0) ** np.arange(300)), ring(np.full(300, 8.0), elevation_deg=-14.0)])
    segmenter = Segmenter(model, CONFIG, device="cpu", backend=backend, level_ground=False)
    prediction = segmenter.predict(scan)
    expected = labels_from_logits(reference(model, with_texture(scan, ROUGH_STEP)))[0].numpy()
    agreement = np.mean(prediction.labels == expected)
    assert agreement == 1.0 if backend == "torch" else agreement > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_texture_network_on_cuda_labels_as_the_training_network_on_the_cpu():
    model = trained_like(CONFIG, seed=4)
    with torch.no_grad():  # a random network barely listens to one input: make the texture move its confidence
        model.point_encoder.mlp[0].weight[9] *= 1000.0
        model.head.weight *= 20.0
    scan = np.concatenate([ring(15.0 + 0.03 * (-1.0) ** np.arange(300)), ring(np.full(300, 8.0), elevation_deg=-14.0)])
    labels, confidence = (t.numpy() for t in labels_from_logits(reference(model, with_texture(scan, ROUGH_STEP))))
    smooth_confidence = labels_from_logits(reference(model, with_texture(scan, 1.0)))[1].numpy()
    assert np.abs(smooth_confidence - confidence).max() > 0.015  # 0.023 measured on the CPU
    segmenter = Segmenter(copy.deepcopy(model), CONFIG, device="cuda", level_ground=False)
    assert segmenter.device.type == "cuda" and not segmenter.fp16
    prediction = segmenter.predict(scan)
    assert np.mean(prediction.labels == labels) > 0.99
    np.testing.assert_allclose(prediction.confidence, confidence, atol=5e-3)  # TF32 convolutions


def test_dataset_adds_the_texture_of_the_scan_as_read(tmp_path):
    seq = write_sequence(tmp_path, sizes=(40, 60))
    write_scan(seq / "velodyne" / "000001.bin", ring(12.0 + 0.02 * np.sin(np.arange(60.0))))  # in sensor order
    plain = SemanticKittiDataset(tmp_path, ["00"])[1].points
    sample = SemanticKittiDataset(tmp_path, ["00"], texture_step=ROUGH_STEP)[1]
    assert sample.points.shape == (60, 5)
    np.testing.assert_array_equal(sample.points[:, :4], plain)
    file_points = np.fromfile(seq / "velodyne" / "000001.bin", np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(sample.points[:, 4], ring_texture(file_points, ROUGH_STEP))
    assert sample.points[:, 4].min() > 0.05  # the ring's steps were found
    # dropping points afterwards keeps each survivor's texture of the whole scan
    subset = SemanticKittiDataset(tmp_path, ["00"], max_points=20, seed=5, texture_step=ROUGH_STEP)[1].points
    rows = [int(np.flatnonzero((plain == p[:4]).all(axis=1))[0]) for p in subset]
    np.testing.assert_array_equal(subset[:, 4], sample.points[rows, 4])
    with pytest.raises(ValueError, match="fused scans"):
        SemanticKittiDataset(tmp_path, ["00"], fuser=object(), texture_step=ROUGH_STEP)


def test_a_texture_model_learns_a_class_only_the_texture_tells():
    config = dataclasses.replace(CONFIG, width=0.25, point_branch=True)  # per-point logits: texture is per point
    torch.manual_seed(0)
    model = build_model(config)
    points = torch.from_numpy(textured_cloud(400, 6))
    labels = (points[:, 4] > 0.5).long()  # a class only the texture tells
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = (torch.zeros(len(points), dtype=torch.long), 1)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(points, *batch).point_logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def column_major_scan() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four beams of 200 returns, rough and smooth ones, ring-major; the same points column-major (as
    nuScenes and some drivers write them: every beam's return at one azimuth, then the next azimuth);
    and each column-major point's ring."""
    beams = [
        ring(15.0 + 0.03 * (-1.0) ** np.arange(200), elevation_deg=-8.0),
        ring(np.full(200, 11.0), elevation_deg=-10.0),
        ring(9.0 + 0.02 * (-1.0) ** np.arange(200), elevation_deg=-12.0),
        ring(np.full(200, 7.0), elevation_deg=-14.0),
    ]
    ring_major = np.concatenate(beams)
    order = np.arange(800).reshape(4, 200).T.ravel()  # azimuth by azimuth, beams within
    return ring_major, ring_major[order], order // 200


def test_a_ring_field_reads_column_major_clouds_ring_by_ring():
    ring_major, column_major, rings = column_major_scan()
    expected = ring_texture(ring_major, ROUGH_STEP)
    assert np.all(ring_texture(column_major, ROUGH_STEP) == 0.0)  # no neighbours in that order
    order = np.arange(800).reshape(4, 200).T.ravel()
    np.testing.assert_array_equal(ring_texture(column_major, ROUGH_STEP, rings), expected[order])
    np.testing.assert_allclose(expected[:200], 0.06 / 14.97 / ROUGH_STEP, rtol=1e-3)  # ±3 cm at 15 m
    assert expected[200:400].max() < 0.01  # the smooth beam
    with pytest.raises(ValueError, match="ring has 3 values for 800 points"):
        ring_texture(column_major, ROUGH_STEP, rings[:3])


def test_the_node_labels_a_column_major_cloud_with_a_ring_field_as_the_ring_major_one(tmp_path):
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    from m2s_perception.labels import load_label_map
    from m2s_perception.pipeline import LabelSettings, ScanLabeller
    from m2s_perception.pointcloud2 import CloudFormatError, decode_cloud, make_cloud, read_fields

    model = trained_like(CONFIG, seed=5)
    segmenter = Segmenter(model, CONFIG, device="cpu", level_ground=False)
    labeller = ScanLabeller(segmenter, load_label_map(), PointCloud2, PointField)
    ring_major, column_major, rings = column_major_scan()

    def cloud(points: np.ndarray, ring_ids: np.ndarray | None, ring_dtype=np.uint16):
        columns = {name: points[:, k].copy() for k, name in enumerate(("x", "y", "z", "intensity"))}
        if ring_ids is not None:
            columns["ring"] = ring_ids.astype(ring_dtype)
        return make_cloud(PointCloud2, PointField, Header(), columns)

    settings = LabelSettings(min_range=1.0, max_range=80.0, label_format="train")
    expected = labels_from_logits(reference(model, with_texture(ring_major, ROUGH_STEP)))[0].numpy()
    order = np.arange(800).reshape(4, 200).T.ravel()
    labelled = labeller.label(cloud(column_major, rings), settings).cloud
    np.testing.assert_array_equal(read_fields(labelled, ("label",))["label"].ravel(), expected[order])
    assert decode_cloud(cloud(column_major, rings)).ring is None  # read only where asked for
    with pytest.raises(CloudFormatError, match="'ring' must hold integers"):
        decode_cloud(cloud(column_major, rings, np.float32), with_ring=True)
