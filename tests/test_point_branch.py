"""The point branch (PVKD), both backbones: per-point logits of their own, trained, and served by every engine."""

import copy
import importlib.util

import numpy as np
import pytest
import torch

from m2s_perception.inference import Segmenter
from m2s_perception.models import ModelConfig, build_model

SMALL = dict(grid_size=(8, 8, 2), rho_range=(0.0, 20.0), point_channels=(8, 16), base_channels=8, levels=2)
HAVE_SPCONV = importlib.util.find_spec("spconv") is not None
BACKBONES = ["polar", pytest.param("cylinder", marks=pytest.mark.skipif(not HAVE_SPCONV, reason="needs spconv"))]


def two_points_per_voxel() -> torch.Tensor:
    """Pairs of points 1 cm apart (same voxel of the 8 x 8 x 2 grid) with different remissions."""
    centres = torch.tensor([[5.0, 1.0, -1.0], [-8.0, 4.0, 0.5], [2.0, -12.0, -0.5]])
    first = torch.cat([centres, torch.zeros(3, 1)], dim=1)
    second = torch.cat([centres + 0.01, torch.ones(3, 1)], dim=1)
    return torch.stack([first, second], dim=1).reshape(-1, 4)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_points_of_one_voxel_get_their_own_logits_only_with_the_branch(backbone):
    points = two_points_per_voxel()
    batch_index = torch.zeros(len(points), dtype=torch.long)
    for branch in (False, True):
        torch.manual_seed(0)
        config = ModelConfig(**SMALL, backbone=backbone, point_branch=branch)
        output = build_model(config).eval()(points, batch_index, 1)
        assert output.point_to_voxel[0::2].tolist() == output.point_to_voxel[1::2].tolist()  # same voxels
        differ = (output.point_logits[0::2] - output.point_logits[1::2]).abs().amax(dim=1)
        assert bool((differ > 1e-6).all()) == branch, (branch, differ)
        # the voxel logits stay the voxel's: the branch only adds a per-point correction
        assert output.voxel_logits.shape == (3, 20)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_branch_learns_from_point_labels_and_the_segmenter_serves_it(backbone):
    torch.manual_seed(0)
    config = ModelConfig(**SMALL, backbone=backbone, point_branch=True)
    model = build_model(config)
    points = two_points_per_voxel()
    batch_index = torch.zeros(len(points), dtype=torch.long)
    labels = torch.tensor([1, 9] * 3)  # car | road inside each voxel: only per-point logits can fit this
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(model(points, batch_index, 1).point_logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    assert model(points, batch_index, 1).point_logits.argmax(1).tolist() == labels.tolist()

    # polar: the fused network (torch backend) and the exported ONNX model compute the branch too;
    # cylinder: the Segmenter runs the training network (spconv has no ONNX form)
    for backend in ("torch", "onnxruntime", "openvino") if backbone == "polar" else ("torch",):
        if backend != "torch" and importlib.util.find_spec(backend) is None:
            continue
        segmenter = Segmenter(copy.deepcopy(model), config, "cpu", backend=backend)
        assert segmenter.predict(points.numpy()).labels.tolist() == labels.tolist(), backend


def test_fused_network_computes_the_branch_like_the_training_network():
    torch.manual_seed(1)
    config = ModelConfig(**SMALL, point_branch=True)
    model = build_model(config).eval()
    cloud = torch.cat([torch.randn(3000, 3) * torch.tensor([8.0, 8.0, 0.8]), torch.rand(3000, 1)], dim=1)
    with torch.no_grad():
        reference = model(cloud, torch.zeros(len(cloud), dtype=torch.long), 1).point_logits
    segmenter = Segmenter(model, config, "cpu")
    fused = segmenter.engine.run(segmenter.binning(cloud.numpy()))
    np.testing.assert_allclose(fused.point_logits, reference.numpy(), atol=1e-4)


def test_old_checkpoints_have_no_branch():
    assert ModelConfig().point_branch is False  # configs without the key load as before
    assert build_model(ModelConfig(**SMALL)).point_head is None
