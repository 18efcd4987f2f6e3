"""The range-view backbone: pixels by hand, the output contract, azimuth wrap-around, learning, m2s-eval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_models import cross_entropy_while_fitting, single

from m2s_perception.inference import Segmenter
from m2s_perception.models import ModelConfig, ModelOutput, build_model
from m2s_perception.models.range_view import SphericalImage

SMALL = {"backbone": "range", "image_size": (16, 64), "elevation_range": (-25.0, 3.0), "levels": 3}


def small_model(width: float = 0.5, seed: int = 0, **changes) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(width=width, **{**SMALL, **changes}))


def at(distance: float, azimuth_deg: float, elevation_deg: float, remission: float = 0.5) -> list[float]:
    """A point seen at this azimuth and elevation from the sensor."""
    horizontal = distance * math.cos(math.radians(elevation_deg))
    azimuth = math.radians(azimuth_deg)
    z = distance * math.sin(math.radians(elevation_deg))
    return [horizontal * math.cos(azimuth), horizontal * math.sin(azimuth), z, remission]


def spread_cloud(num_points: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    points = [
        at(rng.uniform(3, 40), rng.uniform(-180, 180), rng.uniform(-24, 2), rng.uniform()) for _ in range(num_points)
    ]
    return torch.tensor(points, dtype=torch.float32)


def test_pixels_by_hand():
    # 64 rows over -25..+3 degrees: 0.4375 degrees per row, row 0 at the top; 1024 columns from -180 degrees
    image = SphericalImage((64, 1024), (-25.0, 3.0))
    points = torch.tensor(
        [
            at(10.0, 0.2, 0.1),  # 25.1 / 0.4375 = 57.4 rows from the bottom: row 63 - 57 = 6; 180.2 / 0.3515625 -> 512
            at(12.0, -29.9, -9.9),  # 15.1 / 0.4375 = 34.5 -> row 29; 150.1 / 0.3515625 = 426.95 -> 426
            at(8.0, 179.9, 10.0),  # above the top: row 0; 359.9 / 0.3515625 = 1023.7 -> 1023
            at(8.0, -179.9, -40.0),  # below the bottom: row 63; column 0
        ]
    )
    row, column, features = image.locate(points)
    assert row.tolist() == [6, 29, 0, 63]
    assert column.tolist() == [512, 426, 1023, 0]
    # features: x, y, z, distance, remission, row offset, column offset (in pixels from the pixel centre)
    assert features.shape == (4, 7)
    torch.testing.assert_close(features[:, 3], torch.tensor([10.0, 12.0, 8.0, 8.0]))
    torch.testing.assert_close(features[0, 5], torch.tensor(25.1 / 0.4375 - 57.5))
    torch.testing.assert_close(features[1, 6], torch.tensor(150.1 / 0.3515625 - 426.5), atol=1e-3, rtol=0)
    assert features[2, 5] > 0.5 and features[3, 5] < -0.5  # clamped points say how far outside they lie


def test_output_contract_and_batch_independence():
    model = small_model().eval()
    cloud_a, cloud_b = spread_cloud(300, 1), spread_cloud(200, 2)
    with torch.no_grad():
        out = model(
            torch.cat([cloud_b, cloud_a]),
            torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(300, dtype=torch.long)]),
            2,
        )
        alone = model(*single(cloud_a))
    assert isinstance(out, ModelOutput)
    assert out.point_logits.shape == (500, 20)
    assert torch.equal(out.point_logits, out.voxel_logits[out.point_to_voxel])
    assert len(torch.unique(out.voxel_coords, dim=0)) == len(out.voxel_logits)
    assert (out.voxel_coords[:, 1] < 16).all() and (out.voxel_coords[:, 2] < 64).all()
    assert (out.voxel_coords[:, 3] == 0).all()
    torch.testing.assert_close(out.point_logits[200:], alone.point_logits, atol=1e-5, rtol=1e-4)
    for name, feature in out.point_features.items():
        assert feature.shape[0] == 500, name


def test_points_of_one_pixel_share_its_logits():
    model = small_model().eval()
    points = torch.tensor([at(10.0, 40.0, -5.0), at(10.3, 40.2, -5.1), at(10.0, -100.0, -5.0)])
    with torch.no_grad():
        out = model(*single(points))
    assert out.point_to_voxel[0] == out.point_to_voxel[1] != out.point_to_voxel[2]
    assert torch.equal(out.point_logits[0], out.point_logits[1])


def test_the_image_wraps_around_in_azimuth():
    # columns 0 and 63 touch across ±180 degrees: a point in one changes the decoder feature of the other
    model = small_model().eval()
    probe, neighbour = torch.tensor([at(10.0, -179.0, -5.0)]), torch.tensor([at(10.0, 179.0, -5.0)])
    far = torch.tensor([at(10.0, 0.0, -5.0)])
    with torch.no_grad():
        alone = model(*single(probe)).point_features["bev_decoder"][0]
        beside = model(*single(torch.cat([probe, neighbour]))).point_features["bev_decoder"][0]
        opposite = model(*single(torch.cat([probe, far]))).point_features["bev_decoder"][0]
    scale = alone.abs().max().item()
    assert (alone - beside).abs().max().item() > 0.01 * scale
    assert (alone - opposite).abs().max().item() < 1e-4 * scale  # half a turn away: out of the network's reach


def test_a_few_optimizer_steps_reduce_cross_entropy():
    points = spread_cloud(1500, 6)
    labels = 1 + (points[:, 1] > 0).long() + 2 * (points[:, 2] > -2.0).long()
    losses = cross_entropy_while_fitting(small_model(), points, labels)
    assert losses[-1] < 0.5 * losses[0], losses


def test_texture_column_is_an_input():
    model = small_model(texture_step=0.003).eval()
    points = spread_cloud(50, 7)
    smooth = torch.cat([points, torch.zeros(50, 1)], dim=1)
    rough = torch.cat([points, torch.ones(50, 1)], dim=1)
    with torch.no_grad():
        assert not torch.allclose(model(*single(smooth)).point_logits, model(*single(rough)).point_logits)
    with pytest.raises(ValueError, match="5 columns"):
        model(*single(points))


@pytest.mark.parametrize("bad", [{"image_size": (16,)}, {"image_size": (0, 64)}, {"elevation_range": (3.0, -25.0)}])
def test_config_rejects_bad_images(bad):
    with pytest.raises(ValueError):
        ModelConfig(**{**SMALL, **bad})


def test_segmenter_runs_a_range_model_and_refuses_onnx_engines():
    model = small_model()
    config = ModelConfig(width=0.5, **SMALL)
    prediction = Segmenter(model, config, "cpu").predict(spread_cloud(400, 8).numpy())
    assert prediction.labels.shape == (400,) and prediction.labels.min() >= 1
    with pytest.raises(ValueError, match=r"range.*no ONNX form: use backend 'torch'"):
        Segmenter(model, config, "cpu", backend="onnxruntime")


def test_distillation_needs_one_image():
    from m2s_training.distill import check_same_grid

    teacher = ModelConfig(width=1.0, **SMALL)
    check_same_grid(teacher, ModelConfig(width=0.5, **SMALL))  # widths may differ
    for change in ({"image_size": (16, 128)}, {"elevation_range": (-30.0, 10.0)}):
        with pytest.raises(ValueError, match=next(iter(change))):
            check_same_grid(teacher, ModelConfig(width=0.5, **{**SMALL, **change}))


def test_point_branch_tells_points_of_one_pixel_apart():
    model = small_model(point_branch=True).eval()
    points = torch.tensor([at(10.0, 40.0, -5.0, 0.1), at(10.3, 40.2, -5.1, 0.9)])
    with torch.no_grad():
        out = model(*single(points))
    assert out.point_to_voxel[0] == out.point_to_voxel[1]
    assert not torch.allclose(out.point_logits[0], out.point_logits[1])


def test_student_has_about_a_quarter_of_the_teacher_parameters():
    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    assert 3.0 < count(small_model(1.0)) / count(small_model(0.5)) < 4.5
