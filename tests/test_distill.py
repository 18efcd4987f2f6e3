"""Distillation losses on hand-made tensors, and the Distiller on tiny real and point-wise models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2s_perception.models import ModelConfig, ModelOutput, build_model
from m2s_perception.typed_config import from_dict
from m2s_training.checkpoint import save_checkpoint
from m2s_training.data.dataset import Batch
from m2s_training.distill import (
    LOSS_NAMES,
    DistillConfig,
    Distiller,
    build_distiller,
    difficulty_weights,
    feature_distillation,
    feature_widths,
    group_affinity_distillation,
    instance_groups,
    kl_distillation,
    match_voxels,
    sample_supervoxels,
    supervoxel_of_voxels,
)

TINY = dict(
    grid_size=(16, 16, 4),
    rho_range=(0.0, 20.0),
    z_range=(-2.0, 2.0),
    point_channels=(16, 32),
    base_channels=8,
    levels=2,
)
PERSON, POLE, ROAD = 6, 18, 9
ALL_TERMS = dict(point_affinity=1.0, voxel_affinity=1.0, supervoxel_cells=(4, 4, 2), supervoxels_sampled=8)


# --- loss terms on hand-made tensors ------------------------------------------------------------


def test_feature_distillation_is_scale_free_and_matches_hand_values():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert feature_distillation(teacher * 3.0, teacher).item() == pytest.approx(0.0, abs=1e-7)
    student = torch.tensor([[0.0, 1.0], [0.0, 5.0]])  # first row orthogonal: ‖ŝ − t̂‖² = 2; second equal
    assert feature_distillation(student, teacher).item() == pytest.approx(1.0)


def test_kl_distillation_hand_value_and_temperature_scaling():
    teacher = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    student = torch.zeros(1, 2)  # q = (1/2, 1/2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kl_distillation(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-5)
    # T = 2 softens p to softmax(0, ln3 / 2) = (1, √3) / (1 + √3); the loss is scaled by T²
    p = torch.tensor([1.0, math.sqrt(3.0)]) / (1 + math.sqrt(3.0))
    expected_t2 = 4.0 * float((p * (p / 0.5).log()).sum())
    assert kl_distillation(student, teacher, 2.0).item() == pytest.approx(expected_t2, rel=1e-5)
    assert kl_distillation(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_distillation_row_weights_give_the_weighted_mean():
    teacher = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # row 1: p = q, KL 0
    student = torch.zeros(2, 2)
    kl_row0 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kl_distillation(student, teacher, 1.0).item() == pytest.approx(kl_row0 / 2, rel=1e-5)
    weighted = kl_distillation(student, teacher, 1.0, torch.tensor([3.0, 1.0]))
    assert weighted.item() == pytest.approx(3.0 * kl_row0 / 4.0, rel=1e-5)


def test_match_voxels_pairs_equal_coordinates():
    teacher = torch.tensor([[0, 1, 2, 3], [1, 0, 0, 0], [0, 5, 5, 1], [0, 1, 2, 4]])
    student = torch.tensor([[0, 5, 5, 1], [1, 0, 0, 0], [0, 9, 9, 9], [0, 1, 2, 3]])
    s_rows, t_rows = match_voxels(student, teacher)
    assert s_rows.tolist() == [0, 1, 3]
    assert t_rows.tolist() == [2, 1, 0]


def test_group_affinity_hand_value_and_ungrouped_rows_are_ignored():
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])  # cos(row0, row1) = 0
    teacher = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 3.0]])  # cos(row0, row1) = 1
    groups = torch.tensor([0, 0, -1])
    # one group, two off-diagonal entries, each (0 − 1)² = 1
    assert group_affinity_distillation(student, teacher, groups, 8).item() == pytest.approx(1.0)
    assert group_affinity_distillation(teacher, teacher, groups, 8).item() == pytest.approx(0.0, abs=1e-7)
    # a single-member group has no pairs: nothing to compare
    assert group_affinity_distillation(student, teacher, torch.tensor([0, 1, -1]), 8).item() == 0.0


def test_group_affinity_subsamples_at_most_k_rows_per_group():
    torch.manual_seed(0)
    # 50 rows in one group: student all equal (affinity 1), teacher alternating ±e1 (affinity ±1).
    student = torch.ones(50, 2)
    teacher = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]).repeat(25, 1)
    # with K = 2, one pair: same sign (0) or opposite sign (2² = 4); random draws give both
    losses = {
        round(group_affinity_distillation(student, teacher, torch.zeros(50, dtype=torch.long), 2).item(), 4)
        for _ in range(20)
    }
    assert losses == {0.0, 4.0}
    full = group_affinity_distillation(student, teacher, torch.zeros(50, dtype=torch.long), 50)
    assert full.item() == pytest.approx(4.0 * 25 * 25 * 2 / (50 * 49))  # opposite-sign pairs among all pairs


def test_instance_groups_separate_clouds_classes_and_skip_non_hard():
    batch_index = torch.tensor([0, 0, 0, 1, 1, 0, 0])
    labels = torch.tensor([PERSON, PERSON, POLE, PERSON, ROAD, PERSON, PERSON])
    instance = torch.tensor([3, 3, 3, 3, 7, 0, 4])
    groups = instance_groups(batch_index, labels, instance, torch.tensor([PERSON, POLE]))
    assert groups[4] == -1 and groups[5] == -1  # road is not hard; instance 0 is no instance
    assert groups[0] == groups[1]
    assert len({int(groups[i]) for i in (0, 2, 3, 6)}) == 4  # other class, other cloud, other instance


def test_supervoxels_and_difficulty_aware_sampling():
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 2, 0, 0], [1, 0, 0, 0]])
    sv = supervoxel_of_voxels(coords, (2, 2, 2))
    assert sv[0] == sv[1] and len({int(sv[0]), int(sv[2]), int(sv[3])}) == 3
    # three supervoxels: common class near, common class far, rare class near
    point_sv = torch.tensor([0, 0, 1, 1, 2])
    labels = torch.tensor([ROAD, ROAD, ROAD, ROAD, PERSON])
    distance = torch.tensor([5.0, 5.0, 40.0, 40.0, 5.0])
    weights = difficulty_weights(point_sv, 3, labels, distance, 20, rare_class_power=1.0, far_weight=1.0)
    # rarity: road 1, person 4 (4 road points / 1 person); distance factor 1 + d / 40
    torch.testing.assert_close(weights, torch.tensor([1.125, 2.0, 4.5]))
    chosen = sample_supervoxels(torch.tensor([0.0, 1.0, 0.0, 2.0]), 2)
    assert chosen.tolist() == [False, True, False, True]  # zero weight is never drawn


def test_config_validates_keys_and_values():
    assert from_dict(DistillConfig, {"feature": 2.0}).weights()["kd_feature"] == 2.0
    assert set(DistillConfig().weights()) == set(LOSS_NAMES)
    with pytest.raises(ValueError, match="unknown keys bogus"):
        from_dict(DistillConfig, {"bogus": 1}, "distill")
    with pytest.raises(ValueError, match="must be >= 0"):
        DistillConfig(logit_point=-1.0)


# --- the Distiller on models -------------------------------------------------------------------


def _batch(num_clouds: int = 2, points_per_cloud: int = 300, fused_per_cloud: int = 0, seed: int = 0) -> Batch:
    """Clouds with road and two hard instances each; fused points appended after each cloud's own."""
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for b in range(num_clouds):
        xyz = torch.rand((points_per_cloud, 3), generator=gen) * torch.tensor([30.0, 30.0, 2.0]) - torch.tensor(
            [15.0, 15.0, 1.5]
        )
        labels = torch.full((points_per_cloud,), ROAD)
        instance = torch.zeros(points_per_cloud, dtype=torch.long)
        for k, (cls, centre) in enumerate([(PERSON, (6.0, 2.0)), (POLE, (-4.0, 7.0))]):
            rows = slice(k * 20, k * 20 + 20)
            xyz[rows, :2] = torch.tensor(centre) + torch.randn((20, 2), generator=gen) * 0.3
            labels[rows], instance[rows] = cls, k + 1
        own = torch.cat([xyz, torch.rand((points_per_cloud, 1), generator=gen)], 1)
        fused = torch.cat([xyz[:fused_per_cloud] + 0.05, torch.rand((fused_per_cloud, 1), generator=gen)], 1)
        n = points_per_cloud + fused_per_cloud
        parts.append(
            (
                torch.cat([own, fused]),
                torch.cat([labels, labels[:fused_per_cloud]]),
                torch.cat([instance, instance[:fused_per_cloud]]),
                torch.arange(n) >= points_per_cloud,
                torch.full((n,), b),
            )
        )
    points, labels, instance, is_fused, batch_index = (torch.cat(column) for column in zip(*parts, strict=True))
    return Batch(points, labels, instance, is_fused, batch_index, num_clouds, [("00", f"{b:06d}") for b in range(2)])


def _student_output(student: nn.Module, batch: Batch) -> ModelOutput:
    view = batch.student_view()
    return student(view.points, view.batch_index, view.batch_size)


def _distiller(teacher: nn.Module, student: nn.Module, **config) -> Distiller:
    return Distiller(teacher, DistillConfig(**config), feature_widths(student, "cpu"), feature_widths(teacher, "cpu"))


def test_identical_teacher_and_student_give_zero_terms():
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(**TINY)).eval()
    student = copy.deepcopy(teacher).eval()
    distiller = _distiller(teacher, student, **ALL_TERMS)
    batch = _batch()
    terms = distiller(batch, _student_output(student, batch))
    assert set(terms) == set(LOSS_NAMES)
    for name, value in terms.items():
        assert value.item() == pytest.approx(0.0, abs=1e-6), name


def test_different_student_gives_positive_terms():
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(**TINY)).eval()
    student = build_model(ModelConfig(width=0.5, **TINY))
    distiller = _distiller(teacher, student, **ALL_TERMS)
    assert isinstance(distiller.adapters["bev_decoder"], nn.Linear)  # widths 8 vs 4 → 1×1 adapter
    batch = _batch(fused_per_cloud=30)
    terms = distiller(batch, _student_output(student, batch))
    for name, value in terms.items():
        assert value.item() > 1e-4, name


def test_ramp_scales_every_term_linearly_over_the_first_steps():
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(**TINY)).eval()
    student = build_model(ModelConfig(width=0.5, **TINY)).eval()
    distiller = _distiller(teacher, student, ramp_steps=4, **ALL_TERMS)
    batch = _batch(fused_per_cloud=30)
    output = _student_output(student, batch)
    distiller.generator.manual_seed(1)  # the affinity terms sample points and supervoxels: the same draws
    full = distiller(batch, output)  # no step: fully on
    for step, factor in [(0, 0.25), (2, 0.75), (3, 1.0), (100, 1.0)]:
        distiller.generator.manual_seed(1)
        ramped = distiller(batch, output, step=step)
        for name, value in ramped.items():
            assert value.item() == pytest.approx(factor * full[name].item(), rel=1e-5), (name, step)
    with pytest.raises(ValueError, match="ramp_steps"):
        DistillConfig(ramp_steps=-1)


def test_class_weighted_point_logits_weigh_each_point_by_its_label():
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(**TINY)).eval()
    student = build_model(ModelConfig(width=0.5, **TINY)).eval()
    batch = _batch(fused_per_cloud=30)
    output = _student_output(student, batch)
    class_weights = torch.rand(20) + 0.5
    logits_only = dict(feature=0.0, logit_voxel=0.0, instance_affinity=0.0)
    config = DistillConfig(class_weighted_logits=True, **logits_only)
    distiller = Distiller(
        teacher, config, feature_widths(student, "cpu"), feature_widths(teacher, "cpu"), class_weights=class_weights
    )
    own = ~batch.is_fused
    with torch.no_grad():
        teacher_logits = teacher(batch.points, batch.batch_index, batch.batch_size).point_logits[own]
    labels = batch.labels[own]
    weights = torch.where(labels == 0, torch.tensor(1.0), class_weights[labels])
    expected = kl_distillation(output.point_logits, teacher_logits, config.temperature, weights)
    unweighted = kl_distillation(output.point_logits, teacher_logits, config.temperature)
    got = distiller(batch, output)["kd_logit_point"]
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert got.item() != pytest.approx(unweighted.item(), rel=1e-6)
    # weight 0 on road: the term is the plain mean over the other points
    class_weights = torch.ones(20)
    class_weights[ROAD] = 0.0
    distiller = Distiller(
        teacher, config, feature_widths(student, "cpu"), feature_widths(teacher, "cpu"), class_weights=class_weights
    )
    not_road = labels != ROAD
    assert 0 < int(not_road.sum()) < len(labels)
    expected = kl_distillation(output.point_logits[not_road], teacher_logits[not_road], config.temperature)
    assert distiller(batch, output)["kd_logit_point"].item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="class weights"):
        Distiller(teacher, config, feature_widths(student, "cpu"), feature_widths(teacher, "cpu"))


class PointwiseModel(nn.Module):
    """Each point's outputs depend on that point alone; voxels are 1 m cubes per cloud."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 20)

    def forward(self, points: Tensor, batch_index: Tensor, batch_size: int) -> ModelOutput:
        logits = self.layer(points)
        cells = torch.cat([batch_index[:, None], torch.floor(points[:, :3]).long() + 100], 1)
        coords, point_to_voxel = torch.unique(cells, dim=0, return_inverse=True)
        sums = logits.new_zeros((len(coords), 20)).index_add_(0, point_to_voxel, logits)
        voxel_logits = sums / torch.bincount(point_to_voxel)[:, None]
        return ModelOutput(logits, voxel_logits, coords, point_to_voxel, {"bev_decoder": torch.tanh(logits)})


def test_teacher_rows_of_own_points_align_with_student_points():
    """Fused points sit between clouds in the batch; a point-wise teacher equal to the student gives 0."""
    torch.manual_seed(0)
    teacher = PointwiseModel()
    batch = _batch(fused_per_cloud=40)
    batch.points[batch.is_fused, 0] += 100.0  # fused points in voxels of their own: voxel logits unaffected
    distiller = _distiller(teacher, teacher, **ALL_TERMS)
    terms = distiller(batch, _student_output(teacher, batch))
    for name, value in terms.items():
        assert value.item() == pytest.approx(0.0, abs=1e-6), name
    shuffled = _student_output(teacher, batch)
    shuffled.point_logits = shuffled.point_logits.flip(0)
    assert distiller(batch, shuffled)["kd_logit_point"].item() > 1e-3


def test_student_view_output_is_required():
    teacher = PointwiseModel()
    distiller = _distiller(teacher, teacher)
    batch = _batch(fused_per_cloud=10)
    full_output = teacher(batch.points, batch.batch_index, batch.batch_size)
    with pytest.raises(ValueError, match="student_view"):
        distiller(batch, full_output)


def test_distillation_step_updates_student_and_adapters_only():
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(**TINY))
    student = build_model(ModelConfig(width=0.5, **TINY)).train()
    distiller = _distiller(teacher, student, **ALL_TERMS).train()
    assert not teacher.training  # stays in eval mode whatever the trainer does
    trainable = [p for p in [*student.parameters(), *distiller.parameters()] if p.requires_grad]
    assert not any(p.requires_grad for p in teacher.parameters())
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    before_teacher = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_student = [p.detach().clone() for p in student.parameters()]
    before_adapter = [p.detach().clone() for p in distiller.adapters.parameters()]

    batch = _batch(fused_per_cloud=30)
    output = _student_output(student, batch)
    terms = distiller(batch, output)
    task = F.cross_entropy(output.point_logits, batch.student_view().labels)
    (task + sum(terms.values())).backward()
    optimizer.step()

    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before_teacher[key], rtol=0, atol=0)  # BN statistics included
    assert any(not torch.equal(p, b) for p, b in zip(student.parameters(), before_student, strict=True))
    assert before_adapter and all(
        not torch.equal(p, b) for p, b in zip(distiller.adapters.parameters(), before_adapter, strict=True)
    )


def test_build_distiller_from_checkpoint(tmp_path):
    teacher_config = ModelConfig(**TINY)
    save_checkpoint(tmp_path / "teacher.pt", build_model(teacher_config), teacher_config)
    distiller = build_distiller(
        DistillConfig(feature_names=("bev_decoder", "point_mlp")),
        tmp_path / "teacher.pt",
        ModelConfig(width=0.5, **TINY),
        device="cpu",
    )
    assert set(distiller.adapters) == {"bev_decoder", "point_mlp"}
    assert distiller.adapters["point_mlp"].in_features == 16 and distiller.adapters["point_mlp"].out_features == 32
    other_grid = ModelConfig(**{**TINY, "grid_size": (8, 16, 4)})
    with pytest.raises(ValueError, match="grid_size"):
        build_distiller(None, tmp_path / "teacher.pt", other_grid, device="cpu")
    with pytest.raises(ValueError, match="no point_features"):
        build_distiller(
            DistillConfig(feature_names=("nope",)), tmp_path / "teacher.pt", other_grid.__class__(**TINY), device="cpu"
        )


@pytest.mark.slow
def test_teacher_then_distill_through_the_trainer_on_synthetic_data(tmp_path):
    """m2s-train's path end to end: a fused-input teacher, then a student distilled from it."""
    import csv
    from pathlib import Path

    from m2s_perception.checkpoint import read_checkpoint
    from m2s_training.config import load_config
    from m2s_training.synth import generate
    from m2s_training.trainer import Trainer

    generate(tmp_path / "data", ["00", "08"], preset="tiny", scans=6, seed=0)
    config_dir = Path(__file__).resolve().parent.parent / "config"

    def shrink(name: str, **values):
        budget = {"data.num_workers": 0, "data.max_val_scans": 2, "train.max_steps": 3, "train.val_every": 3}
        budget |= {"train.checkpoint_every": 3, **{f"model.{key}": value for key, value in TINY.items()}}
        return load_config(config_dir / name, {**budget, **values})

    Trainer(shrink("teacher_polar_synthetic.yaml"), tmp_path / "data", tmp_path / "teacher", "cpu").fit()
    teacher_ckpt = tmp_path / "teacher" / "last.pt"
    before = read_checkpoint(teacher_ckpt)["state_dict"]
    config = shrink("distill_polar_synthetic.yaml", **{"train.mode": "distill", "train.teacher": str(teacher_ckpt)})
    trainer = Trainer(config, tmp_path / "data", tmp_path / "student", "cpu")
    assert trainer.train_set[5].is_fused.any()  # the teacher's input carries the previous scans' instances
    assert trainer.extra_loss.config.class_weighted_logits  # the config's choice, with the task loss's weights
    torch.testing.assert_close(trainer.extra_loss.label_weights[1:].cpu(), trainer.class_weights[1:])
    trainer.fit()
    with open(tmp_path / "student" / "log.csv", encoding="utf-8") as f:
        logged = {row["name"] for row in csv.DictReader(f) if row["split"] == "train"}
    assert set(LOSS_NAMES) <= logged
    for key, value in trainer.extra_loss.teacher.state_dict().items():
        torch.testing.assert_close(value.cpu(), before[key], rtol=0, atol=0)


class _FixedLogits(nn.Module):
    """A teacher stand-in whose every point and voxel gets the same class probabilities."""

    def __init__(self, probabilities: list[float]):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(probabilities).log())

    def forward(self, points: Tensor, batch_index: Tensor, batch_size: int) -> ModelOutput:
        n = len(points)
        logits = self.weight.expand(n, -1)
        coords = torch.stack([batch_index, torch.arange(n), batch_index, batch_index], 1)
        return ModelOutput(logits, logits, coords, torch.arange(n), {"f": points})


def test_teacher_ensemble_averages_class_probabilities_by_hand():
    from m2s_training.distill import TeacherEnsemble

    ensemble = TeacherEnsemble([_FixedLogits([0.8, 0.2, 0.0 + 1e-12]), _FixedLogits([0.4, 0.2, 0.4])])
    out = ensemble(torch.zeros(5, 4), torch.zeros(5, dtype=torch.long), 1)
    # (0.8 + 0.4) / 2, (0.2 + 0.2) / 2, (0 + 0.4) / 2
    torch.testing.assert_close(out.point_logits.softmax(1), torch.tensor([[0.6, 0.2, 0.2]]).expand(5, -1))
    torch.testing.assert_close(out.voxel_logits.softmax(1), torch.tensor([[0.6, 0.2, 0.2]]).expand(5, -1))


def test_ensemble_of_checkpoints_distils_logits_only(tmp_path):
    config = ModelConfig(**TINY)
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / f"t{seed}.pt", build_model(config), config)
    teachers = (tmp_path / "t0.pt", tmp_path / "t1.pt")
    with pytest.raises(ValueError, match=r"no single feature space: set distill\.feature, distill\.instance_affinity"):
        build_distiller(DistillConfig(), teachers, config, device="cpu")
    logit_only = DistillConfig(feature=0.0, instance_affinity=0.0)
    distiller = build_distiller(logit_only, teachers, config, device="cpu")
    points = torch.rand(300, 4) * torch.tensor([30.0, 30.0, 2.0, 1.0]) - torch.tensor([15.0, 15.0, 1.0, 0.0])
    index = torch.zeros(300, dtype=torch.long)
    single = [build_distiller(logit_only, t, config, device="cpu").teacher for t in teachers]
    with torch.no_grad():
        mean = sum(t(points, index, 1).point_logits.softmax(1) for t in single) / 2
        torch.testing.assert_close(distiller.teacher(points, index, 1).point_logits.softmax(1), mean)
    # one m2s-ensemble checkpoint of the same two: the same teacher, the same refusal of feature terms
    from m2s_training.ensemble import assemble

    assemble(list(teachers), tmp_path / "pair.pt")
    with pytest.raises(ValueError, match=r"no single feature space"):
        build_distiller(DistillConfig(), tmp_path / "pair.pt", config, device="cpu")
    assembled = build_distiller(logit_only, tmp_path / "pair.pt", config, device="cpu").teacher
    with torch.no_grad():
        torch.testing.assert_close(assembled(points, index, 1).point_logits.softmax(1), mean)
    # one path in a list is a single teacher
    from m2s_training.config import LoopConfig

    assert LoopConfig(mode="distill", teacher=("a.pt",)).teacher == "a.pt"
