"""Inference engine: numpy binning, the fused network, ONNX export and the three backends agree with
the training network (``PolarNet.forward``) on the same scans."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_models import SMALL_GRID, ring_cloud

from m2s_perception.binning import PolarBinning
from m2s_perception.inference import Segmenter, labels_from_logits
from m2s_perception.models import ModelConfig, build_model
from m2s_perception.models.grid import CylindricalGrid
from m2s_perception.models.polar_fused import FusedPolarNet

CONFIG = ModelConfig(width=0.5, **SMALL_GRID)


def trained_like(config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """A polar model whose BatchNorms hold non-trivial statistics (folding them must matter)."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.3, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model.eval()


def reference(model: torch.nn.Module, points: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        cloud = torch.from_numpy(points)
        return model(cloud, torch.zeros(len(cloud), dtype=torch.long), 1).point_logits


def cloud_with_edges(num_points: int, seed: int) -> np.ndarray:
    """A ring cloud plus points out of range and on both sides of phi = ±π (where circular padding acts)."""
    edges = [[100.0, 0.0, 10.0, 0.5], [0.1, 0.0, -10.0, 0.5], [0.0, 0.0, 0.0, 0.0]]
    for phi in (math.pi - 1e-3, -math.pi + 1e-3):
        edges += [[r * math.cos(phi), r * math.sin(phi), -1.0, 0.3] for r in (5.0, 12.0, 20.0)]
    return np.concatenate([ring_cloud(num_points, seed).numpy(), np.array(edges, np.float32)])


def test_binning_matches_the_torch_grid_and_unique():
    points = cloud_with_edges(700, 1)
    binned = PolarBinning(CONFIG)(points)
    location = CylindricalGrid(CONFIG.grid_size, CONFIG.rho_range, CONFIG.z_range).locate(torch.from_numpy(points))
    _, phi_bins, height_bins = CONFIG.grid_size
    i, j, k = location.cell.unbind(1)
    cells, point_cell = torch.unique(i * phi_bins + j, sorted=True, return_inverse=True)
    assert np.array_equal(binned.cells, cells.numpy())
    assert np.array_equal(binned.point_cell, point_cell.numpy())
    assert np.array_equal(binned.point_voxel, (point_cell * height_bins + k).numpy())
    np.testing.assert_allclose(binned.features, location.features.numpy().T, atol=1e-6)


def test_binning_by_hand_and_buffers_reused_across_scans():
    config = ModelConfig(grid_size=(10, 4, 2), rho_range=(0.0, 10.0), z_range=(-1.0, 1.0), levels=1)
    binning = PolarBinning(config)
    binning(ring_cloud(500, 2).numpy())  # a larger scan first: the buffers must not leak into the next
    # rho 5.5 → i 5; phi π/4 → j 2; z 0.25 → k 1.   rho 1.5, phi -3π/4 → i 1, j 0; z -0.5 → k 0.
    points = np.array(
        [
            [5.5 * math.cos(math.pi / 4), 5.5 * math.sin(math.pi / 4), 0.25, 0.7],
            [1.5 * math.cos(-3 * math.pi / 4), 1.5 * math.sin(-3 * math.pi / 4), -0.5, 0.1],
            [5.5 * math.cos(math.pi / 4), 5.5 * math.sin(math.pi / 4), -0.25, 0.2],
        ],
        np.float32,
    )
    binned = binning(points)
    assert binned.cells.tolist() == [1 * 4 + 0, 5 * 4 + 2]
    assert binned.point_cell.tolist() == [1, 0, 1]
    assert binned.point_voxel.tolist() == [1 * 2 + 1, 0 * 2 + 0, 1 * 2 + 0]
    np.testing.assert_allclose(binned.features[:, 0], [*points[0, :3], 5.5, math.pi / 4, 0.7, 0, 0, -0.25], atol=1e-5)
    assert binned.features.flags.c_contiguous and binned.features.shape == (9, 3)


@pytest.mark.parametrize("circular_phi", [True, False])
def test_fused_network_reproduces_the_training_network(circular_phi: bool):
    config = dataclasses.replace(CONFIG, circular_phi=circular_phi)
    model = trained_like(config)
    points = cloud_with_edges(1500, 3)
    binned = PolarBinning(config)(points)
    inputs = (binned.features, binned.point_cell, binned.point_voxel, binned.cells)
    with torch.inference_mode():
        labels, confidence, logits = FusedPolarNet(model)(*(torch.from_numpy(a) for a in inputs))
    expected = reference(model, points)
    torch.testing.assert_close(logits, expected, atol=2e-5, rtol=1e-4)
    expected_labels, expected_confidence = labels_from_logits(expected)
    assert torch.equal(labels, expected_labels)
    torch.testing.assert_close(confidence, expected_confidence, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def exported():
    pytest.importorskip("onnx")
    from m2s_perception.export import export_onnx

    model = trained_like(CONFIG, seed=1)
    return model, export_onnx(model, CONFIG, ["unlabeled", "car"])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_model_matches_torch_for_any_point_count(exported, backend: str):
    pytest.importorskip(backend)
    from m2s_perception.backends import OnnxRuntimeBackend, OpenVinoBackend

    model, onnx_model = exported
    engine = (OnnxRuntimeBackend if backend == "onnxruntime" else OpenVinoBackend)(onnx_model, "cpu", 1)
    for num_points, seed in [(3000, 4), (250, 5), (1, 6)]:  # dynamic point and cell counts
        points = cloud_with_edges(num_points, seed)
        out = engine.run(PolarBinning(CONFIG)(points))
        expected = reference(model, points)
        np.testing.assert_allclose(out.point_logits, expected.numpy(), atol=5e-5, rtol=1e-4)
        labels, confidence = labels_from_logits(expected)
        assert np.array_equal(out.labels, labels.numpy())
        np.testing.assert_allclose(out.confidence, confidence.numpy(), atol=1e-5)


def test_export_pools_with_one_scatter_max_node(exported):
    import onnx

    from m2s_perception.export import OPSET, read_metadata

    proto = onnx.load_from_string(exported[1])
    scatters = [n for n in proto.graph.node if n.op_type.startswith("Scatter")]
    reductions = [a.s.decode() for n in scatters for a in n.attribute if a.name == "reduction"]
    assert reductions == ["max"] and len(scatters) == 2  # the max pooling; the copy into the BEV map
    assert not [n for n in proto.graph.node if n.op_type == "If"]
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == OPSET >= 18
    assert read_metadata(exported[1]) == (CONFIG, ["unlabeled", "car"], "elements")


def test_m2s_export_writes_a_file_every_backend_runs_and_prints_parity(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from m2s_perception.export import main
    from m2s_training.checkpoint import save_checkpoint

    checkpoint = tmp_path / "student.pt"
    save_checkpoint(checkpoint, trained_like(CONFIG, seed=2), CONFIG)
    assert main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "onnx"), "--points", "4000", "900"]) == 0
    printed = capsys.readouterr().out
    assert "parity with torch" in printed and printed.count("labels agree on 100.000 %") == 2
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["model.onnx"]

    # The faster ScatterND form: OpenVINO checks it; ONNX Runtime refuses it (its ScatterND max races).
    argv = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "rows"), "--points", "3000", "--pooling", "rows"]
    assert main(argv) == 0
    assert "OpenVINO" in capsys.readouterr().out
    with pytest.raises(ValueError, match="races"):
        Segmenter.from_checkpoint(tmp_path / "rows" / "model.onnx", "cpu", backend="onnxruntime")

    points = cloud_with_edges(2000, 7)
    torch_labels = Segmenter.from_checkpoint(checkpoint, "cpu").predict(points)
    for backend in ("onnxruntime", "openvino"):
        for source in (checkpoint, tmp_path / "onnx" / "model.onnx"):
            prediction = Segmenter.from_checkpoint(source, "cpu", backend=backend, num_threads=1).predict(points)
            assert prediction.labels.dtype == np.uint8 and prediction.confidence.dtype == np.float32
            assert np.array_equal(prediction.labels, torch_labels.labels), (backend, source.name)
            np.testing.assert_allclose(prediction.confidence, torch_labels.confidence, atol=1e-5)


def test_torch_backend_agrees_with_the_training_network_and_keeps_the_segmenter_contract(tmp_path):
    model = trained_like(CONFIG, seed=3)
    segmenter = Segmenter(model, CONFIG, "cpu")
    points = cloud_with_edges(2500, 8)
    labels, confidence = labels_from_logits(reference(model, points))
    prediction = segmenter.predict(points)
    assert np.array_equal(prediction.labels, labels.numpy())
    np.testing.assert_allclose(prediction.confidence, confidence.numpy(), atol=1e-5)
    assert segmenter.predict(np.zeros((0, 4), np.float32)).labels.shape == (0,)
    assert segmenter.describe().startswith("torch ")


def test_unexportable_and_unknown_choices_fail_clearly(tmp_path):
    from m2s_perception.export import ExportError, fused_network, main

    with pytest.raises(ExportError, match=r"cylinder.*cannot be exported.*spconv"):
        fused_network(torch.nn.Identity(), ModelConfig(backbone="cylinder"))
    with pytest.raises(ExportError, match=r"range.*cannot be exported.*no ONNX form"):
        fused_network(torch.nn.Identity(), ModelConfig(backbone="range"))
    with pytest.raises(ValueError, match=r"cylinder.*no ONNX form: use backend 'torch'"):
        Segmenter(torch.nn.Identity(), ModelConfig(backbone="cylinder"), "cpu", backend="onnxruntime")
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        Segmenter(trained_like(CONFIG), CONFIG, "cpu", backend="tensorflow")
    with pytest.raises(ValueError, match="not 'torch'"):
        Segmenter(None, CONFIG, "cpu", backend="torch")
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_gpu_backends_agree_with_cpu_float32(exported, backend: str):
    if backend == "onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            pytest.skip("needs onnxruntime-gpu (CUDA execution provider)")
    model, _ = exported
    gpu = Segmenter(model, CONFIG, "cuda", backend=backend, fp16=True)  # autocast / TensorRT fp16
    assert gpu.fp16
    assert Segmenter(model, CONFIG, "cuda", backend=backend).fp16 == (backend == "onnxruntime")  # precision auto
    gpu.warmup(num_points=5000)
    points = cloud_with_edges(20000, 9)
    cpu = Segmenter(model, CONFIG, "cpu")
    assert (gpu.predict(points).labels == cpu.predict(points).labels).mean() > 0.98


def test_m2s_eval_backend_writes_the_same_predictions_as_torch(tmp_path):
    pytest.importorskip("openvino")
    from m2s_training.checkpoint import save_checkpoint
    from m2s_training.data.semantic_kitti import read_labels
    from m2s_training.evaluate import main
    from m2s_training.synth import generate

    generate(tmp_path / "data", ["08"], preset="tiny", scans=2, seed=3)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, trained_like(CONFIG, seed=4), CONFIG)
    runs = {}
    for backend in ("torch", "openvino"):
        out = tmp_path / backend
        data = str(tmp_path / "data")
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                data,
                "--out",
                str(out),
                "--device",
                "cpu",
                "--backend",
                backend,
            ]
        )
        predictions = sorted((out / "sequences/08/predictions").glob("*.label"))
        assert len(predictions) == 2
        runs[backend] = [read_labels(p, None)[0] for p in predictions]
        assert json.loads((out / "metrics.json").read_text())["backend"] == backend
    for torch_labels, engine_labels in zip(runs["torch"], runs["openvino"], strict=True):
        assert np.array_equal(torch_labels, engine_labels)


def test_bag_evaluation_passes_the_backend_to_the_node_only_when_set(tmp_path):
    from m2s_training.bag.evaluate import EvaluationOptions, node_parameters

    assert "backend" not in node_parameters(tmp_path / "m.pt", EvaluationOptions())
    assert node_parameters(tmp_path / "m.pt", EvaluationOptions(backend="openvino"))["backend"] == "openvino"


@pytest.mark.parametrize("pooling", ["elements", "rows"])
def test_engines_pool_the_same_maxima_on_every_run(pooling: str):
    """ONNX Runtime's ScatterND max races between threads: with the demo weights on a 30k-point scan,
    19 of 30 runs had 80–2000 points off by up to 0.6 in a logit. So the onnxruntime backend (and
    m2s-export's file) get the ScatterElements form; OpenVINO's ScatterND kernel is exact."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from m2s_perception.backends import OnnxRuntimeBackend, OpenVinoBackend
    from m2s_perception.export import export_onnx, ring_scan

    demo = Path(__file__).resolve().parents[1] / "m2s_perception/weights/demo_student.pt"
    segmenter = Segmenter.from_checkpoint(demo, "cpu")
    model, config = segmenter.model, segmenter.config
    points = ring_scan(config, 30000, seed=2)
    expected = reference(model, points).numpy()
    onnx_model = export_onnx(model, config, pooling=pooling)
    engines = [OpenVinoBackend(onnx_model, "cpu", 2)]
    if pooling == "elements":
        engines.append(OnnxRuntimeBackend(onnx_model, "cpu", 2))
    for engine in engines:
        for _ in range(10):
            logits = engine.run(PolarBinning(config)(points)).point_logits
            np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=1e-4, err_msg=engine.name)
