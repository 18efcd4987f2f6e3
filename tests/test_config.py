"""The typed training config: every key and type checked in every section, --set, label map → num_classes."""

import re
from pathlib import Path

import pytest
import yaml

from m2s_perception.models import ModelConfig
from m2s_perception.resources import share_file
from m2s_perception.typed_config import ConfigError, from_dict
from m2s_training.config import TrainConfig, config_to_dict, load_config, override, resume_differences
from m2s_training.train import overrides, parse_args

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(
    p.name for p in (REPO / "config").glob("*.yaml") if p.name.split("_")[0] in ("train", "teacher", "distill")
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_training_configs_load_and_round_trip(name, tmp_path):
    config = load_config(REPO / "config" / name)
    assert config.model.num_classes == 20  # from the packaged label map; no YAML repeats it
    assert "num_classes" not in (REPO / "config" / name).read_text()
    again = write(tmp_path, yaml.safe_dump(config_to_dict(config)))
    assert load_config(again) == config


def test_yaml_exponent_floats_are_floats(tmp_path):
    # PyYAML reads 1e-3 (no dot) as the string "1e-3": it used to reach AdamW and die with a TypeError
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"
    config = load_config(write(tmp_path, "optim:\n  lr: 1e-3\n  weight_decay: 5e-4\n"))
    assert config.optim.lr == 0.001 and isinstance(config.optim.lr, float)
    assert config.optim.weight_decay == 0.0005


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim:\n  lrr: 0.1\n", "optim: unknown keys lrr"),
        ("fusion:\n  k_prev: 2\n", "fusion: unknown keys k_prev"),  # a student run does not use fusion: still checked
        ("distill:\n  feature_weight: 2\n", "distill: unknown keys feature_weight"),  # … nor distill:
        ("augment:\n  rotation: true\n", "augment: unknown keys rotation"),
        ("trian:\n  epochs: 2\n", "unknown keys trian"),
        ("train:\n  epochs: ten\n", "train.epochs: expected an integer, got str 'ten'"),
        ("train:\n  epochs: 2.5\n", "train.epochs: expected an integer"),
        ("train:\n  amp: 1\n", "train.amp: expected true or false"),
        ("optim:\n  lr: fast\n", "optim.lr: expected a number, got str 'fast'"),
        ("model:\n  grid_size: [24, 24]\n", "model.grid_size: expected 3 values, got 2"),
        ("model:\n  point_channels: 16\n", "model.point_channels: expected a list"),
        ("fusion:\n  moving: keep\n", "fusion.moving: expected one of 'align', 'drop'"),
        ("distill:\n  hard_classes: [car, 3]\n", "distill.hard_classes[1]: expected a string"),
        ("data: 4\n", "data: expected a mapping, got int 4"),
        ("label_map: 3\n", "label_map: expected a path string"),
        ("epochs: 2\n", "epochs is now train.epochs"),
        ("data:\n  augment:\n    rotate: true\n", "data.augment is now the top-level section augment"),
        ("model:\n  num_classes: 19\n", "model.num_classes: 19, but the label map"),
        ("train:\n  mode: distill\n", "distill mode needs a teacher checkpoint"),
        ("train:\n  mode: teacher\n", "teacher mode needs a 'fusion:' section"),
    ],
)
def test_every_section_rejects_unknown_keys_and_wrong_types(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))


def test_set_overrides_any_key_with_its_type(tmp_path):
    path = REPO / "config" / "distill_polar_synthetic.yaml"
    args = parse_args(
        [
            *("--config", str(path), "--data", "d", "--out", "o", "--mode", "distill", "--teacher", "123"),
            *("--set", "optim.lr=3e-3", "--set", "model.grid_size=[48, 48, 8]", "--set", "distill.feature=0"),
            *("--set", "fusion.cache_dir=null", "--epochs", "3", "--set", "train.epochs=4"),
        ]
    )
    config = load_config(path, overrides(args))
    assert config.optim.lr == 0.003
    assert config.model.grid_size == (48, 48, 8)
    assert config.distill.feature == 0.0 and config.fusion.cache_dir is None
    assert config.train.mode == "distill" and config.train.teacher == "123"  # a path, even one YAML reads as a number
    assert config.train.epochs == 4  # an explicit --set wins over the shorthand
    bad = [["--set", "optim.learning_rate=1"], ["--set", "optim.lr=[1"], ["--set", "optim.lr"], ["--set", "optim=1"]]
    messages = ["optim: unknown keys learning_rate", "not valid YAML", "SECTION.KEY=VALUE", "optim: expected a mapping"]
    for extra, message in zip(bad, messages, strict=True):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(path, overrides(parse_args(["--config", str(path), "--data", "d", "--out", "o", *extra])))


def test_the_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    from m2s_training.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(write(tmp_path, "optim: {lr: fast}\n")), "--data", "d", "--out", str(tmp_path / "o")])
    assert str(exit_info.value).startswith("m2s-train: ") and "optim.lr: expected a number" in str(exit_info.value)


def test_override_checks_again_and_model_config_uses_the_same_loader():
    config = override(TrainConfig(), {"optim.lr": "2e-3", "data.batch_size": 4})
    assert config.optim.lr == 0.002 and config.data.batch_size == 4
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer"):
        override(config, {"data.batch_size": "4"})
    assert ModelConfig.from_dict({"width": 1, "grid_size": [8, 16, 4]}) == ModelConfig(width=1.0, grid_size=(8, 16, 4))
    with pytest.raises(ConfigError, match=r"model\.width: expected a number, got bool"):
        ModelConfig.from_dict({"width": True})
    with pytest.raises(ConfigError, match="model: width must be positive"):
        from_dict(ModelConfig, {"width": -1.0}, "model")


def test_resume_differences_leave_out_budget_and_cadence():
    saved = config_to_dict(TrainConfig())
    now = config_to_dict(override(TrainConfig(), {"train.max_steps": 99, "data.num_workers": 0, "loss.ce_weight": 2}))
    assert resume_differences(saved, now) == ["loss.ce_weight: 1.0 → 2.0"]


def small_label_map(tmp_path: Path) -> Path:
    """The SemanticKITTI map cut to three training ids: unlabeled, car, road (everything else ignored)."""
    doc = yaml.safe_load(share_file("config/semantic-kitti.yaml").read_text())
    doc["learning_map"] = {raw: {10: 1, 252: 1, 40: 2}.get(raw, 0) for raw in doc["labels"]}
    doc["learning_map_inv"] = {0: 0, 1: 10, 2: 40}
    doc["hard_classes"] = ["car"]
    path = tmp_path / "car-road.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_num_classes_comes_from_the_label_map(tmp_path):
    label_map = small_label_map(tmp_path)
    config = load_config(write(tmp_path, f"label_map: {label_map}\n"))
    assert config.model.num_classes == 3
    assert config.load_label_map().class_names == ("unlabeled", "car", "road")


def test_fusion_section_matches_the_fuser_arguments():
    import dataclasses
    import inspect

    from m2s_training.config import FusionConfig
    from m2s_training.fusion import MultiScanFuser

    arguments = set(inspect.signature(MultiScanFuser).parameters) - {"label_map"}  # the run's label map
    assert {f.name for f in dataclasses.fields(FusionConfig)} == arguments


def test_the_demo_weights_training_config_loads():
    config = load_config(REPO / "m2s_perception" / "weights" / "demo_student_train.yaml")
    assert (config.model.width, config.model.grid_size) == (0.5, (120, 180, 24))  # what test_demo checks of the weights
