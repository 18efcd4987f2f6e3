"""bench/ensemble_spread.py's arithmetic, by hand: the mean of probabilities, scored over the scans."""

import math

import numpy as np
import pytest
import torch

from bench.ensemble_spread import VIEWS, cross_combinations, ensemble_labels, metrics_of, score, viewed


def _log(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).log()


def test_the_ensemble_labels_the_mean_probability_over_real_classes():
    a = _log([[0.01, 0.69, 0.29, 0.01], [0.70, 0.10, 0.15, 0.05]])
    b = _log([[0.01, 0.01, 0.48, 0.50], [0.70, 0.10, 0.15, 0.05]])
    # point 0: a says 1, b says 3; the mean (0.01, 0.35, 0.385, 0.255) says 2
    # point 1: 'unlabeled' (0) is the most probable, but never a label: the best real class, 2
    assert ensemble_labels([a, b]).tolist() == [2, 2]
    assert ensemble_labels([a]).tolist() == [1, 2]


def test_score_accumulates_every_scan():
    one = _log([[0.1, 0.6, 0.2, 0.1]])  # labels 1
    two = _log([[0.1, 0.1, 0.7, 0.1]])  # labels 2
    member = [one, two]  # its log-probabilities on scan 0 and scan 1
    targets = [torch.tensor([1]), torch.tensor([1])]  # both points are class 1
    # class 1: one hit, one miss -> IoU 1/2; class 2 absent from the truth -> not in the mean
    assert math.isclose(score([member], targets, 4), 0.5)


def test_cross_ensembles_take_half_of_each_pool():
    # pool A: networks 0, 1, 2; pool B: 3, 4. Two of A (3 ways) with both of B (1 way)
    assert cross_combinations(3, 2, 4) == [(0, 1, 3, 4), (0, 2, 3, 4), (1, 2, 3, 4)]
    # one of each: 3 x 2
    assert cross_combinations(3, 2, 2) == [(0, 3), (0, 4), (1, 3), (1, 4), (2, 3), (2, 4)]
    with pytest.raises(ValueError, match="must be even"):
        cross_combinations(3, 2, 3)


def test_metrics_give_each_class_its_iou():
    one = _log([[0.1, 0.6, 0.2, 0.1], [0.1, 0.2, 0.6, 0.1]])  # labels 1, 2
    targets = [torch.tensor([1, 1])]
    metrics = metrics_of([[one]], targets, 4)
    # class 1: 1 hit, 1 miss -> 1/2; class 2: 0 hits, 1 false -> 0 (absent from the truth: not in the mean)
    assert math.isclose(metrics.iou[1], 0.5, rel_tol=1e-6) and metrics.iou[2] < 1e-6
    assert math.isclose(metrics.present_miou, 0.5, rel_tol=1e-6)


def test_views_mirror_then_rotate_and_keep_remission():
    points = np.array([[1.0, 0.0, -1.5, 0.3], [0.0, 2.0, 0.5, 0.9]], dtype=np.float32)
    # mirror: (1, 0) stays, (0, 2) -> (0, -2); then 90 degrees: (x, y) -> (-y, x)
    got = viewed(points, mirror=True, degrees=90.0)
    np.testing.assert_allclose(got, [[0.0, 1.0, -1.5, 0.3], [2.0, 0.0, 0.5, 0.9]], atol=1e-6)
    np.testing.assert_array_equal(points[1], np.float32([0.0, 2.0, 0.5, 0.9]))  # the input is not touched
    # the identity view is the scan itself, and every view set starts with it
    np.testing.assert_array_equal(viewed(points, False, 0.0), points)
    assert all(views[0] == (False, 0.0) for views in VIEWS.values())


def checked_against_m2s_eval(tmp_path, monkeypatch, capsys, model, config, name: str) -> str:
    """``model`` saved as a checkpoint, scored by m2s-eval on two tiny synthetic scans, then re-scored by this
    script with ``--check`` as pool ``name`` (``sys.argv`` stays set for another ``main()``); what it printed."""
    import sys

    import bench.ensemble_spread as spread
    from m2s_training.checkpoint import save_checkpoint
    from m2s_training.evaluate import main as m2s_eval
    from m2s_training.synth import generate

    generate(tmp_path / "data", ["08"], preset="tiny", scans=2, seed=3)
    checkpoint, out = tmp_path / f"{name}.pt", tmp_path / "eval"
    save_checkpoint(checkpoint, model, config)
    data = str(tmp_path / "data")
    m2s_eval(["--checkpoint", str(checkpoint), "--data", data, "--split", "all", "--out", str(out), "--device", "cpu"])
    argv = ["ensemble_spread", "--data", data, "--size", "1", "--check", f"{checkpoint}={out}"]
    monkeypatch.setattr(sys, "argv", [*argv, "--pool", name, str(checkpoint)])
    spread.main()
    printed = capsys.readouterr().out
    assert f"check {checkpoint}" in printed
    return printed


def test_a_texture_network_is_rescored_as_m2s_eval_scores_it(tmp_path, monkeypatch, capsys):
    """--check: the script's figure for a network with the surface texture input equals m2s-eval's, and
    it would not if the script fed that network no texture (the check fails then)."""
    from test_export import trained_like
    from test_texture import CONFIG

    import bench.ensemble_spread as spread

    printed = checked_against_m2s_eval(tmp_path, monkeypatch, capsys, trained_like(CONFIG, seed=6), CONFIG, "texture")
    assert "texture: 1 networks, alone" in printed and "nan" not in printed  # one network: no spread to print

    def smooth_everywhere(points, *_args):
        return np.concatenate([points[:, :4], np.zeros((len(points), 1), np.float32)], axis=1)

    import m2s_perception.inference

    monkeypatch.setattr(m2s_perception.inference, "with_texture", smooth_everywhere)
    with pytest.raises(SystemExit, match="differs from m2s-eval"):
        spread.main()


def test_cross_pools_need_only_half_an_ensemble_each(tmp_path, monkeypatch, capsys):
    """--cross with two pools of one network and --size 2: each pool alone has no ensemble of 2, the
    cross has exactly one (a with b), and --classes adds its median IoU of the asked classes."""
    import sys

    from test_export import CONFIG, trained_like

    import bench.ensemble_spread as spread
    from m2s_training.checkpoint import save_checkpoint
    from m2s_training.synth import generate

    generate(tmp_path / "data", ["08"], preset="tiny", scans=2, seed=3)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    save_checkpoint(a, trained_like(CONFIG, seed=1), CONFIG)
    save_checkpoint(b, trained_like(CONFIG, seed=2), CONFIG)
    argv = ["ensemble_spread", "--data", str(tmp_path / "data"), "--size", "2", "--classes", "road"]
    monkeypatch.setattr(sys, "argv", [*argv, "--pool", "a", str(a), "--pool", "b", str(b), "--cross", "a", "b"])
    spread.main()
    out = capsys.readouterr().out
    assert "a: 1 networks, alone" in out and "b: 1 networks, alone" in out
    assert "a+b: 1 ensembles of 2: median" in out and "median IoU road" in out
    monkeypatch.setattr(sys, "argv", [*argv, "--pool", "a", str(a), "--pool", "b", str(b)])  # no --cross: 2 each
    with pytest.raises(SystemExit, match="fewer than the 2 an ensemble takes"):
        spread.main()


def test_a_range_view_network_is_rescored_as_m2s_eval_scores_it(tmp_path, monkeypatch, capsys):
    """--check on a backbone with no engine (the range view runs its torch network): the script's figure
    equals m2s-eval's."""
    from test_range_view import SMALL

    from m2s_perception.models import ModelConfig, build_model

    config = ModelConfig(width=0.5, **SMALL)
    torch.manual_seed(4)
    printed = checked_against_m2s_eval(tmp_path, monkeypatch, capsys, build_model(config), config, "range")
    assert "range: 1 networks, alone" in printed
