"""Ensembles: the mean of the members' class probabilities, through every path a checkpoint takes
(training network, fused network, ONNX engines, m2s-ensemble, Segmenter), against members run alone."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_export import CONFIG, cloud_with_edges, reference, trained_like

from m2s_perception.checkpoint import CheckpointError, load_model
from m2s_perception.inference import Segmenter
from m2s_perception.models import build_model
from m2s_perception.models.ensemble import Ensemble, mean_probability_logits
from m2s_training.checkpoint import save_checkpoint
from m2s_training.config import TrainConfig
from m2s_training.ensemble import assemble

REPO = Path(__file__).resolve().parents[1]


def test_mean_probability_logits_by_hand():
    # member probabilities (1/4, 3/4) and (3/4, 1/4): the mean is (1/2, 1/2)
    first = torch.tensor([[0.0, math.log(3.0)]])
    second = torch.tensor([[math.log(3.0), 0.0]])
    mean = mean_probability_logits([first, second])
    torch.testing.assert_close(mean.exp(), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(torch.softmax(mean, dim=1), torch.tensor([[0.5, 0.5]]))
    # (0.9, 0.1) and (0.2, 0.8): mean (0.55, 0.45); the first member's confident vote wins
    a, b = torch.tensor([[0.9, 0.1]]).log(), torch.tensor([[0.2, 0.8]]).log()
    torch.testing.assert_close(mean_probability_logits([a, b]).exp(), torch.tensor([[0.55, 0.45]]))


def members_and_ensemble(tmp_path: Path, count: int = 2) -> tuple[list[torch.nn.Module], list[Path], Path]:
    models = [trained_like(CONFIG, seed=10 + i) for i in range(count)]
    paths = []
    for i, model in enumerate(models):
        paths.append(tmp_path / f"member{i}.pt")
        save_checkpoint(paths[-1], model, CONFIG, step=100 + i, val_miou=0.5)
    out = tmp_path / "ensemble.pt"
    assemble(paths, out)
    return models, paths, out


def expected_probabilities(models: list[torch.nn.Module], points: np.ndarray) -> torch.Tensor:
    """Each member alone (its own training network), then the mean of the softmaxes."""
    return torch.stack([torch.softmax(reference(m, points), dim=1) for m in models]).mean(dim=0)


def test_assembled_checkpoint_averages_the_members_in_every_path(tmp_path):
    models, paths, out = members_and_ensemble(tmp_path)
    points = cloud_with_edges(1500, 5)
    expected = expected_probabilities(models, points)

    ensemble, config, meta = load_model(out, "cpu")
    assert isinstance(ensemble, Ensemble) and config.members == 2
    assert [m["step"] for m in meta["members"]] == [100, 101] and meta["mode"] == "ensemble"
    torch.testing.assert_close(torch.softmax(reference(ensemble, points), dim=1), expected, atol=1e-6, rtol=1e-5)

    prediction = Segmenter.from_checkpoint(out, "cpu").predict(points)  # the node's path: fused network
    expected_labels = expected[:, 1:].argmax(dim=1) + 1
    assert np.mean(prediction.labels == expected_labels.numpy()) > 0.999
    chosen = expected.gather(1, torch.from_numpy(prediction.labels.astype(np.int64))[:, None]).squeeze(1)
    np.testing.assert_allclose(prediction.confidence, chosen.numpy(), atol=1e-4)
    # not a member's answer: the two members disagree on part of the cloud, the ensemble picks by mean
    alone = [Segmenter.from_checkpoint(p, "cpu").predict(points).labels for p in paths]
    assert np.mean(alone[0] != alone[1]) > 0.05


def test_onnx_engines_run_the_ensemble(tmp_path):
    pytest.importorskip("onnxruntime")
    models, _, out = members_and_ensemble(tmp_path)
    points = cloud_with_edges(1500, 6)
    expected = expected_probabilities(models, points)
    for backend in ("onnxruntime", "openvino"):
        pytest.importorskip(backend)
        prediction = Segmenter.from_checkpoint(out, "cpu", backend=backend).predict(points)
        assert np.mean(prediction.labels == (expected[:, 1:].argmax(dim=1) + 1).numpy()) > 0.999, backend


def test_m2s_ensemble_refuses_what_it_cannot_average(tmp_path):
    _, paths, out = members_and_ensemble(tmp_path)
    with pytest.raises(FileExistsError, match="never overwrites"):
        assemble(paths, out)
    wider = tmp_path / "wider.pt"
    save_checkpoint(wider, build_model(dataclasses.replace(CONFIG, width=1.0)), dataclasses.replace(CONFIG, width=1.0))
    with pytest.raises(ValueError, match=r"differs .* in width"):
        assemble([paths[0], wider], tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="itself an ensemble"):
        assemble([out, paths[0]], tmp_path / "nested.pt")
    with pytest.raises(ValueError, match="at least 2"):
        assemble(paths[:1], tmp_path / "one.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble.pt", "member0.pt", "member1.pt", "wider.pt"]
    # the command line says why, without a traceback
    command = [
        sys.executable,
        "-m",
        "m2s_training.ensemble",
        str(paths[0]),
        str(wider),
        "--out",
        str(tmp_path / "x.pt"),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "m2s-ensemble:" in result.stderr and "Traceback" not in result.stderr


def test_networks_of_an_ensemble_join_a_new_one_with_their_record(tmp_path):
    """ENSEMBLE.pt#i takes network i of an ensemble: a third network and network 1 of a two-network
    ensemble give an ensemble whose second network has the weights of the old one's member1.pt."""
    models, paths, old = members_and_ensemble(tmp_path)
    third = tmp_path / "third.pt"
    save_checkpoint(third, trained_like(CONFIG, seed=30), CONFIG, step=7, val_miou=0.25)
    mixed = tmp_path / "mixed.pt"
    assemble([third, f"{old}#1"], mixed)
    ensemble, config, meta = load_model(mixed, "cpu")
    assert config.members == 2
    for name, value in models[1].state_dict().items():
        torch.testing.assert_close(ensemble.members[1].state_dict()[name], value)
    taken = meta["members"][1]
    assert (taken["file"], taken["step"], taken["taken_from"]) == (str(paths[1]), 101, f"{old}#1")
    assert meta["members"][0]["file"] == str(third) and meta["members"][0]["step"] == 7
    with pytest.raises(ValueError, match=r"holds 2 networks \(#0 to #1\), not #2"):
        assemble([third, f"{old}#2"], tmp_path / "x.pt")
    with pytest.raises(ValueError, match="holds one network, not an ensemble"):
        assemble([f"{third}#0", f"{old}#0"], tmp_path / "y.pt")
    with pytest.raises(ValueError, match=r"give its members instead \(.*#0"):
        assemble([third, old], tmp_path / "z.pt")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_ensembles_are_assembled_not_trained_and_checkpoints_bound_their_size(tmp_path):
    config = TrainConfig()
    with pytest.raises(ValueError, match="m2s-ensemble"):
        dataclasses.replace(config, model=dataclasses.replace(config.model, members=4))
    huge = dataclasses.replace(CONFIG, members=17)
    path = tmp_path / "huge.pt"
    save_checkpoint(path, build_model(dataclasses.replace(CONFIG, members=2)), huge)  # weights of 2, config says 17
    with pytest.raises(CheckpointError, match="members 17"):
        load_model(path, "cpu")


def test_the_first_members_of_an_ensemble_run_alone_or_together(tmp_path):
    models = [trained_like(CONFIG, seed=20 + i) for i in range(3)]
    paths = []
    for i, model in enumerate(models):
        paths.append(tmp_path / f"member{i}.pt")
        save_checkpoint(paths[-1], model, CONFIG)
    assemble(paths, tmp_path / "three.pt")
    points = cloud_with_edges(1200, 7)

    one = Segmenter.from_checkpoint(tmp_path / "three.pt", "cpu", members=1)
    assert one.config.members == 1
    assert np.array_equal(one.predict(points).labels, Segmenter.from_checkpoint(paths[0], "cpu").predict(points).labels)
    two = Segmenter.from_checkpoint(tmp_path / "three.pt", "cpu", members=2)
    expected = expected_probabilities(models[:2], points)
    assert two.config.members == 2
    assert np.mean(two.predict(points).labels == (expected[:, 1:].argmax(dim=1) + 1).numpy()) > 0.999
    with pytest.raises(ValueError, match="holds 3 network"):
        Segmenter.from_checkpoint(tmp_path / "three.pt", "cpu", members=4)
    with pytest.raises(ValueError, match="holds 1 network"):
        Segmenter.from_checkpoint(paths[0], "cpu", members=2)
    assert Segmenter.from_checkpoint(paths[0], "cpu", members=1).config.members == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_ensemble_on_cuda_labels_as_the_mean_of_its_members(tmp_path):
    models, _, out = members_and_ensemble(tmp_path)
    points = cloud_with_edges(1500, 7)
    expected_labels = expected_probabilities(models, points)[:, 1:].argmax(dim=1).numpy() + 1
    for fp16 in (False, True):
        gpu = Segmenter.from_checkpoint(out, "cuda", fp16=fp16)
        assert gpu.device.type == "cuda"
        # fp16 may flip points whose two best classes are within rounding of each other
        assert np.mean(gpu.predict(points).labels == expected_labels) > (0.999 if not fp16 else 0.98)
