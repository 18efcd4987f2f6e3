"""Backbones: the ModelOutput contract, clamping, batch independence, width scaling, learning."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest
import torch

from m2s_perception.models import ModelConfig, ModelOutput, build_model
from m2s_perception.models.grid import CylindricalGrid, segment_max

SMALL_GRID = {"grid_size": (32, 24, 8), "rho_range": (2.0, 34.0), "z_range": (-3.0, 1.0), "levels": 3}
HAVE_SPCONV = importlib.util.find_spec("spconv") is not None
BACKBONES = ["polar", pytest.param("cylinder", marks=pytest.mark.skipif(not HAVE_SPCONV, reason="needs spconv"))]


def ring_cloud(num_points: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rho = 3 + 28 * torch.rand(num_points, generator=generator)
    phi = (2 * torch.rand(num_points, generator=generator) - 1) * math.pi
    z = -2.5 + 3 * torch.rand(num_points, generator=generator)
    remission = torch.rand(num_points, generator=generator)
    return torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z, remission], dim=1)


def small_model(backbone: str, width: float = 0.5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(backbone=backbone, width=width, **SMALL_GRID))


def single(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    return points, torch.zeros(len(points), dtype=torch.long), 1


def test_grid_locates_cells_and_offsets_by_hand():
    grid = CylindricalGrid((10, 4, 2), rho_range=(0.0, 10.0), z_range=(-1.0, 1.0))
    # rho 5.5 → cell 5 (centre 5.5); phi π/4 → cell floor((π/4 + π) / (π/2)) = 2 (centre -π + 2.5·π/2 = π/4);
    # z 0.25 → cell 1 (centre 0.5).
    point = torch.tensor([[5.5 * math.cos(math.pi / 4), 5.5 * math.sin(math.pi / 4), 0.25, 0.7]])
    location = grid.locate(point)
    assert location.cell.tolist() == [[5, 2, 1]]
    rho_offset, phi_offset, z_offset = location.features[0, 6:].tolist()
    assert rho_offset == pytest.approx(0.0, abs=1e-5)
    assert phi_offset == pytest.approx(0.0, abs=1e-5)
    assert z_offset == pytest.approx(0.25 - 0.5, abs=1e-6)
    assert location.features[0, 5].item() == pytest.approx(0.7)


def test_segment_max_by_hand():
    values = torch.tensor([[1.0, -5.0], [3.0, -7.0], [-2.0, -1.0]])
    pooled = segment_max(values, torch.tensor([1, 1, 0]), 3)
    assert pooled.tolist() == [[-2.0, -1.0], [3.0, -5.0], [0.0, 0.0]]


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("width", [1.0, 0.5])
def test_output_contract(backbone: str, width: float):
    model = small_model(backbone, width).eval()
    points = torch.cat([ring_cloud(300, 1), ring_cloud(200, 2)])
    batch_index = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(200, dtype=torch.long)])
    with torch.no_grad():
        out = model(points, batch_index, 2)
    assert isinstance(out, ModelOutput)
    num_voxels = len(out.voxel_logits)
    assert out.point_logits.shape == (500, 20)
    assert out.voxel_logits.shape == (num_voxels, 20) and out.voxel_coords.shape == (num_voxels, 4)
    assert out.voxel_coords.dtype == torch.long and out.point_to_voxel.dtype == torch.long
    assert torch.equal(out.point_logits, out.voxel_logits[out.point_to_voxel])
    # Voxels are unique, inside the grid, and each point's voxel is in that point's sample.
    assert len(torch.unique(out.voxel_coords, dim=0)) == num_voxels
    assert (out.voxel_coords[:, 1:] >= 0).all()
    assert (out.voxel_coords[:, 1:] < torch.tensor(SMALL_GRID["grid_size"])).all()
    assert torch.equal(out.voxel_coords[out.point_to_voxel, 0], batch_index)
    assert {"point_mlp"} <= set(out.point_features)
    assert len(out.point_features) >= 3
    for name, feature in out.point_features.items():
        assert feature.shape[0] == 500 and feature.ndim == 2, name


@pytest.mark.parametrize("backbone", BACKBONES)
def test_out_of_range_points_are_clamped_to_border_cells(backbone: str):
    model = small_model(backbone).eval()
    rho_bins, phi_bins, z_bins = SMALL_GRID["grid_size"]
    outside = torch.tensor(
        [
            [100.0, 0.0, 10.0, 0.5],  # beyond rho and z: last rho and z bin, phi 0 → middle phi bin
            [0.1, 0.0, -10.0, 0.5],  # inside the inner radius and below the floor: first bins
            [0.0, 0.0, 0.0, 0.0],  # the sensor origin itself
        ]
    )
    points = torch.cat([ring_cloud(100, 3), outside])
    with torch.no_grad():
        out = model(*single(points))
    assert torch.isfinite(out.point_logits).all()
    coords = out.voxel_coords[out.point_to_voxel[-3:]]
    assert coords[0].tolist() == [0, rho_bins - 1, phi_bins // 2, z_bins - 1]
    assert coords[1].tolist() == [0, 0, phi_bins // 2, 0]
    assert coords[2, 1].item() == 0


@pytest.mark.parametrize("circular_phi", [True, False])
def test_polar_grid_wraps_around_phi_only_when_circular(circular_phi: bool):
    torch.manual_seed(0)
    config = ModelConfig(grid_size=(16, 64, 4), rho_range=(0.0, 16.0), z_range=(-2.0, 2.0), levels=2)
    model = build_model(dataclasses.replace(config, circular_phi=circular_phi)).eval()
    just_above_minus_pi, just_below_pi = -math.pi + 0.01, math.pi - 0.01
    probe = torch.tensor([[8.5 * math.cos(just_above_minus_pi), 8.5 * math.sin(just_above_minus_pi), 0.0, 0.5]])
    neighbour = torch.tensor([[8.5 * math.cos(just_below_pi), 8.5 * math.sin(just_below_pi), 0.0, 0.5]])
    with torch.no_grad():
        alone = model(*single(probe)).point_features["bev_decoder"][0]
        beside = model(*single(torch.cat([probe, neighbour]))).point_features["bev_decoder"][0]
    # phi bins 0 and 63 touch across ±π; without wrapping they are 63 columns apart, out of reach.
    change = (alone - beside).abs().max().item()
    scale = alone.abs().max().item()
    assert scale > 0
    if circular_phi:
        assert change > 0.01 * scale
    else:
        assert change < 1e-4 * scale  # rounding only (the pooled cells go through a 1- vs 2-row matmul)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_sample_logits_do_not_depend_on_the_rest_of_the_batch(backbone: str):
    model = small_model(backbone).eval()
    cloud_a, cloud_b = ring_cloud(400, 4), ring_cloud(250, 5)
    with torch.no_grad():
        alone = model(*single(cloud_a))
        batched = model(
            torch.cat([cloud_b, cloud_a]),
            torch.cat([torch.zeros(250, dtype=torch.long), torch.ones(400, dtype=torch.long)]),
            2,
        )
    torch.testing.assert_close(batched.point_logits[250:], alone.point_logits, atol=1e-5, rtol=1e-4)
    for name, feature in alone.point_features.items():
        torch.testing.assert_close(batched.point_features[name][250:], feature, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_student_has_about_a_quarter_of_the_teacher_parameters(backbone: str):
    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    ratio = count(small_model(backbone, 1.0)) / count(small_model(backbone, 0.5))
    assert 3.0 < ratio < 4.5


def cross_entropy_while_fitting(model: torch.nn.Module, points: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The cross entropy of 15 Adam steps (lr 0.01) fitting ``model`` to one cloud's ``labels``."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(*single(points)).point_logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_few_optimizer_steps_reduce_cross_entropy(backbone: str):
    points = ring_cloud(1500, 6)
    # Learnable labels: a class per half-plane and height, like ground vs. objects on either side.
    labels = 1 + (points[:, 1] > 0).long() + 2 * (points[:, 2] > -1.0).long()
    losses = cross_entropy_while_fitting(small_model(backbone), points, labels)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.skipif(not HAVE_SPCONV, reason="needs spconv")
def test_coarse_voxel_lookup_by_hand():
    import spconv.pytorch as spconv

    from m2s_perception.models.cylinder import _coarse_features

    coarse = spconv.SparseConvTensor(
        torch.tensor([[1.0], [2.0], [3.0]]),
        torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.int32),
        [2, 2, 2],
        2,
    )
    fine = torch.tensor([[0, 3, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert _coarse_features(coarse, fine, num_downsamples=1)[:, 0].tolist() == [2.0, 1.0, 3.0]


def test_config_rejects_unknown_keys_and_round_trips(tmp_path):
    config = ModelConfig(width=0.5, **SMALL_GRID)
    assert ModelConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "model.yaml"
    path.write_text("model:\n  backbone: polar\n  widht: 0.5\n")
    with pytest.raises(ValueError, match=r"model\.yaml.*widht"):
        ModelConfig.from_yaml(path)
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(backbone="pointnet")


@pytest.mark.parametrize("name", ["model_polar.yaml", "model_cylinder.yaml", "model_range.yaml"])
def test_shipped_configs_load(name: str):
    from m2s_perception.resources import share_file

    config = ModelConfig.from_yaml(share_file(f"config/{name}"))
    assert config.backbone == name.removeprefix("model_").removesuffix(".yaml")
    assert config.width == 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backbone", BACKBONES)
def test_cuda_matches_cpu(backbone: str):
    model = small_model(backbone).eval()
    points = ring_cloud(2000, 7)
    with torch.no_grad():
        cpu = model(*single(points)).point_logits
        model.cuda()
        gpu_points, batch_index, batch_size = single(points.cuda())
        gpu = model(gpu_points, batch_index.cuda(), batch_size).point_logits.cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_ravel_and_unravel_index_by_hand():
    from m2s_perception.models.grid import ravel_index, unravel_index

    b, i, j = torch.tensor([1, 0, 1]), torch.tensor([2, 1, 0]), torch.tensor([3, 0, 1])
    index = ravel_index((b, i, j), (2, 3, 4))
    assert index.tolist() == [1 * 12 + 2 * 4 + 3, 0 * 12 + 1 * 4 + 0, 1 * 12 + 0 * 4 + 1]  # row-major
    assert [c.tolist() for c in unravel_index(index, (2, 3, 4))] == [b.tolist(), i.tolist(), j.tolist()]
    assert unravel_index(torch.tensor([7]), (None, 4))[0].tolist() == [1]  # the first axis's size is not needed
