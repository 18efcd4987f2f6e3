"""Loading checkpoints: class names checked against the label map, hostile files refused early."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from m2s_perception.checkpoint import CheckpointError, load_model
from m2s_perception.labels import load_label_map
from m2s_perception.models import ModelConfig, build_model
from m2s_training.checkpoint import save_checkpoint

SMALL = ModelConfig(width=0.5, grid_size=(32, 24, 8), rho_range=(2.0, 34.0), z_range=(-3.0, 1.0), levels=3)


def small_checkpoint(path: Path, config: ModelConfig = SMALL) -> dict:
    """A valid checkpoint of ``config``, returned as the dict ``torch.load`` gives back."""
    torch.manual_seed(0)
    names = None if config.num_classes == SMALL.num_classes else [f"class {i}" for i in range(config.num_classes)]
    save_checkpoint(path, build_model(config), config, class_names=names)
    return torch.load(path, weights_only=True)


def rewrite(path: Path, checkpoint: dict) -> Path:
    torch.save(checkpoint, path)
    return path


def test_valid_checkpoint_loads(tmp_path):
    path = tmp_path / "ok.pt"
    small_checkpoint(path)
    model, config, _meta = load_model(path, "cpu")
    assert config == SMALL and sum(p.numel() for p in model.parameters()) > 0


def test_class_count_must_match_the_label_map(tmp_path):
    path = tmp_path / "five.pt"
    small_checkpoint(path, ModelConfig(**{**SMALL.to_dict(), "num_classes": 5}))
    with pytest.raises(ValueError, match=r"5 classes.*label map has 20"):
        load_model(path, "cpu")


def test_class_count_checked_without_class_names(tmp_path):
    """Older checkpoints without ``class_names``: the model's output count is still checked."""
    path = tmp_path / "old.pt"
    checkpoint = small_checkpoint(path, ModelConfig(**{**SMALL.to_dict(), "num_classes": 7}))
    del checkpoint["class_names"]
    rewrite(path, checkpoint)
    with pytest.raises(ValueError, match=r"7 classes.*label map has 20"):
        load_model(path, "cpu")


def test_class_names_must_match_the_label_map(tmp_path):
    path = tmp_path / "swapped.pt"
    checkpoint = small_checkpoint(path)
    names = list(checkpoint["class_names"])
    names[1], names[2] = names[2], names[1]  # car <-> bicycle
    checkpoint["class_names"] = names
    rewrite(path, checkpoint)
    with pytest.raises(ValueError, match=r"class 1 is 'bicycle' in the checkpoint but 'car' in the label map"):
        load_model(path, "cpu")
    # The same file matches a label map whose classes are in that order.
    label_map = load_label_map()
    swapped = type(label_map)(**{**label_map.__dict__, "class_names": tuple(names)})
    assert load_model(path, "cpu", label_map=swapped)[1] == SMALL


def test_wrong_tensor_shape_is_named(tmp_path):
    path = tmp_path / "shape.pt"
    checkpoint = small_checkpoint(path)
    name = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][name] = torch.zeros(3, 3)
    rewrite(path, checkpoint)
    with pytest.raises(CheckpointError, match=rf"{name}.*\(3, 3\) in the file"):
        load_model(path, "cpu")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("width", 1.0e4, "width"),
        ("grid_size", [100_000, 100_000, 1000], "grid"),
        ("levels", 500, "levels"),
        ("point_channels", [64, 10**7], "point_channels"),
    ],
)
def test_absurd_model_config_is_refused_before_building(tmp_path, key, value, message):
    path = tmp_path / "absurd.pt"
    checkpoint = small_checkpoint(path)
    checkpoint["model_config"][key] = value
    rewrite(path, checkpoint)
    with pytest.raises(CheckpointError, match=message):
        load_model(path, "cpu")


def test_inflated_model_config_allocates_nothing(tmp_path):
    """width 16 would build a 0.5 GB model before load_state_dict noticed the weights do not fit."""
    path = tmp_path / "inflated.pt"
    checkpoint = small_checkpoint(path)
    checkpoint["model_config"]["width"] = 16.0
    rewrite(path, checkpoint)
    script = textwrap.dedent(
        f"""
        import resource, sys
        from m2s_perception.checkpoint import CheckpointError, load_model
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_model({str(path)!r}, "cpu")
        except CheckpointError as err:
            print("refused:", err)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(f"peak RSS growth {{grown_mb:.0f}} MB")
        sys.exit(0 if grown_mb < 100 else 3)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "refused:" in result.stdout, result.stdout + result.stderr
    assert "does not match" in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_is_never_run(tmp_path):
    path = tmp_path / "exploit.pt"
    checkpoint = small_checkpoint(path)
    marker = tmp_path / "pwned"
    checkpoint["meta"] = {"payload": _Exploit(marker)}
    torch.save(checkpoint, path)  # torch.save pickles the object; weights_only loading must not run it
    with pytest.raises(CheckpointError, match=r"refused.*weights_only"):
        load_model(path, "cpu")
    assert not marker.exists()


def test_non_tensor_state_dict_is_refused(tmp_path):
    path = tmp_path / "strings.pt"
    checkpoint = small_checkpoint(path)
    checkpoint["state_dict"] = {"weight": "not a tensor"}
    rewrite(path, checkpoint)
    with pytest.raises(CheckpointError, match="state_dict"):
        load_model(path, "cpu")
