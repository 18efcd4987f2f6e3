"""Checkpoints (save → load round trip, clear errors) and the Segmenter every consumer predicts through."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_models import SMALL_GRID, ring_cloud, single

from m2s_perception.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_model
from m2s_perception.inference import Segmenter
from m2s_perception.labels import load_label_map
from m2s_perception.models import ModelConfig, build_model
from m2s_training.checkpoint import save_checkpoint

CONFIG = ModelConfig(width=0.5, **SMALL_GRID)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(CONFIG)
    # A bias towards 'unlabeled' that the Segmenter must never turn into a label.
    with torch.no_grad():
        model.head.bias.view(CONFIG.grid_size[2], CONFIG.num_classes)[:, 0] += 20.0
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, CONFIG, epoch=3, val_miou=0.25, training_state={"step": 7})
    return path, model.eval()


def test_round_trip_gives_identical_logits_and_meta(checkpoint):
    path, model = checkpoint
    loaded, config, meta = load_model(path, "cpu")
    assert config == CONFIG and meta == {"epoch": 3, "val_miou": 0.25}
    assert not loaded.training
    points = ring_cloud(500, 1)
    with torch.no_grad():
        assert torch.equal(loaded(*single(points)).point_logits, model(*single(points)).point_logits)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT
    assert raw["class_names"] == list(load_label_map().class_names)
    assert raw["training_state"] == {"step": 7}


def test_saving_over_a_checkpoint_leaves_no_temporary_files(checkpoint):
    path, model = checkpoint
    save_checkpoint(path, model, CONFIG, epoch=4)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    assert load_model(path, "cpu")[2] == {"epoch": 4}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"definitely not a torch file", "not a readable m2s checkpoint"),
        ({"state_dict": {}}, "no 'format' tag"),
        ({"format": "m2s-checkpoint/0", "model_config": {}, "state_dict": {}}, "unsupported checkpoint format"),
        ({"format": CHECKPOINT_FORMAT, "model_config": {"backbone": "mlp"}, "state_dict": {}}, "cannot build"),
        ({"format": CHECKPOINT_FORMAT, "model_config": CONFIG.to_dict(), "state_dict": {}}, "cannot build"),
    ],
)
def test_bad_checkpoints_raise_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "broken.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_model(path, "cpu")
    assert "broken.pt" in str(error.value)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pt"):
        load_model(tmp_path / "nowhere.pt")


def test_segmenter_labels_are_the_argmax_over_real_classes(checkpoint):
    path, model = checkpoint
    segmenter = Segmenter.from_checkpoint(path, device="cpu")
    assert segmenter.device.type == "cpu" and not segmenter.fp16
    points = ring_cloud(800, 2)
    prediction = segmenter.predict(points.numpy())
    with torch.no_grad():
        logits = model(*single(points)).point_logits
    assert logits.argmax(1).eq(0).all()  # the raw argmax would say 'unlabeled' everywhere
    assert prediction.labels.dtype == np.uint8 and prediction.confidence.dtype == np.float32
    assert prediction.labels.shape == prediction.confidence.shape == (800,)
    assert np.array_equal(prediction.labels, (logits[:, 1:].argmax(1) + 1).numpy())
    expected_confidence = torch.softmax(logits, 1).gather(1, torch.from_numpy(prediction.labels).long()[:, None])
    np.testing.assert_allclose(prediction.confidence, expected_confidence[:, 0].numpy(), rtol=1e-5, atol=1e-12)


def test_segmenter_rejects_bad_clouds_and_handles_empty_ones(checkpoint):
    segmenter = Segmenter.from_checkpoint(checkpoint[0], device="cpu")
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        segmenter.predict(np.zeros((10, 3), np.float32))
    cloud = ring_cloud(10, 3).numpy()
    cloud[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        segmenter.predict(cloud)
    empty = segmenter.predict(np.zeros((0, 4), np.float32))
    assert empty.labels.shape == (0,) and empty.labels.dtype == np.uint8
    segmenter.warmup(num_points=300)
    float64 = segmenter.predict(ring_cloud(50, 4).numpy().astype(np.float64))
    assert ((float64.labels >= 1) & (float64.labels <= 19)).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_segmenter_fp16_on_cuda_agrees_with_cpu(checkpoint):
    path, _ = checkpoint
    assert not Segmenter.from_checkpoint(path).fp16  # precision auto: fp32 for the torch engine
    gpu = Segmenter.from_checkpoint(path, fp16=True)  # device auto → CUDA
    assert gpu.device.type == "cuda" and gpu.fp16
    gpu.warmup()
    cpu = Segmenter.from_checkpoint(path, device="cpu")
    cloud = ring_cloud(5000, 5).numpy()
    agreement = (gpu.predict(cloud).labels == cpu.predict(cloud).labels).mean()
    assert agreement > 0.98
