"""The official M2SKD terms against values worked out by hand on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from m2s_perception.models import ModelConfig, build_model
from m2s_training import m2skd
from m2s_training.data.dataset import Batch
from tests.test_distill import TINY  # the same tiny polar model as the distillation tests


def test_logit_term_by_hand():
    # Two classes, one voxel. Student logits (0, 0) → p_s = (1/2, 1/2). Teacher logits (0, 10/3·ln 3):
    # 0.3 · z = (0, ln 3) → p_t = (1/4, 3/4).
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.0, math.log(3.0) / 0.3]])
    expected = (0.25 * abs(math.log(0.25 / 0.5)) + 0.75 * abs(math.log(0.75 / 0.5))) / 2  # mean over classes
    assert m2skd.logit_term(student, teacher).item() == pytest.approx(expected, rel=1e-4)


def test_logit_term_drops_agreeing_voxels_and_has_no_t_squared():
    student = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    teacher = torch.tensor([[0.0, math.log(3.0) / 0.3], [1.0, 1.0]])  # second voxel: identical → 0 ≤ 0.01
    one_voxel = (0.25 * math.log(2.0) + 0.75 * math.log(1.5)) / 2
    assert m2skd.logit_term(student, teacher).item() == pytest.approx(one_voxel, rel=1e-4)
    assert m2skd.logit_term(student[1:], teacher[1:]).item() == 0.0


def test_logit_term_gradient_reaches_only_the_student():
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 4.0]], requires_grad=True)
    m2skd.logit_term(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_affinity_term_by_hand():
    # Class 2 has two voxels. Student logits orthogonal (cos 0), teacher's parallel (cos 1):
    # S_s = [[1, 0], [0, 1]], S_t = [[1, 1], [1, 1]] → mean |S_s − S_t| = 2 / 4 = 0.5.
    # Class 3 has one voxel (no pair: skipped); class 1 (car) is not a thing class here.
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [5.0, 1.0], [1.0, 5.0]])
    teacher = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([2, 2, 3, 1, 1])
    assert m2skd.affinity_term(student, teacher, labels).item() == pytest.approx(0.5)


def test_affinity_term_sums_over_classes():
    # Classes 2 and 4, each the same pair as above: 0.5 + 0.5.
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    labels = torch.tensor([2, 2, 4, 4])
    assert m2skd.affinity_term(student, teacher, labels).item() == pytest.approx(1.0)


def test_feature_term_keeps_only_large_errors():
    student = torch.zeros(3, 2)
    teacher = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.5, 0.5]])  # channel-mean squared errors 2, 1, 0.25
    assert m2skd.feature_term(student, teacher).item() == pytest.approx(2.0)  # only 2 > 1


def test_changed_labels_ignores_equal_and_keeps_new_voxels():
    teacher_view = torch.tensor([5, 5, 7, 0, 6])
    student_view = torch.tensor([5, 6, 0, 0, 6])  # voxel 2 exists only in the fused view
    assert m2skd.changed_labels(teacher_view, student_view).tolist() == [0, 5, 7, 0, 0]


def test_voxel_majority_labels():
    point_to_voxel = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([3, 3, 9, 4, 2, 0])  # voxel 1 ties 2 vs 4: smaller id
    assert m2skd.voxel_majority_labels(point_to_voxel, labels, 3, 20).tolist() == [3, 2, 0]


def test_distillation_weights_match_the_official_code():
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.0, math.log(3.0) / 0.3], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([1, 2, 2])
    terms = m2skd.distillation(student, teacher, labels, torch.zeros(3, 1), torch.full((3, 1), 2.0))
    assert terms["m2skd_logit"].item() == pytest.approx(5.0 * m2skd.logit_term(student, teacher).item())
    assert terms["m2skd_affinity"].item() == pytest.approx(0.5)  # class 2 voxels: cos 0 vs cos 1
    assert "m2skd_feature" not in terms  # weight 0.0 in the release


def test_plain_cross_entropy_has_no_class_weights():
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2.0)]])
    labels = torch.tensor([1, 0])  # the second row is ignored
    assert m2skd.plain_cross_entropy(logits, labels).item() == pytest.approx(math.log(3.0))
    assert m2skd.plain_cross_entropy(logits, torch.tensor([0, 0])).item() == 0.0


# --- the joint (shared-weight) teacher view on a tiny real model ---------------------------------

PERSON, ROAD = 6, 9


def _batch(with_fused: bool) -> Batch:
    generator = torch.Generator().manual_seed(0)
    own = torch.cat([torch.rand(200, 2, generator=generator) * 24 - 12, torch.rand(200, 2, generator=generator)], 1)
    labels = torch.where(own[:, 0] > 0, PERSON, ROAD)
    points, point_labels, fused = own, labels, torch.zeros(200, dtype=torch.bool)
    if with_fused:  # a person's copy from a previous scan in cells the scan leaves empty
        extra = torch.tensor([[15.0, 15.0, 0.5, 0.3]]).repeat(20, 1) + torch.rand(20, 4, generator=generator) * 0.2
        points = torch.cat([own, extra])
        point_labels = torch.cat([labels, torch.full((20,), PERSON)])
        fused = torch.cat([fused, torch.ones(20, dtype=torch.bool)])
    return Batch(
        points=points.float(),
        labels=point_labels,
        instance=torch.zeros(len(points), dtype=torch.long),
        is_fused=fused,
        batch_index=torch.zeros(len(points), dtype=torch.long),
        batch_size=1,
        frames=[("00", 0)],
    )


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="polar", **TINY)).eval()  # eval: BN statistics equal in both runs


def test_joint_terms_vanish_when_the_views_are_identical():
    model, batch = _model(), _batch(with_fused=False)
    output = model(batch.points, batch.batch_index, batch.batch_size)
    terms = m2skd.JointM2skd(model, num_classes=20)(batch, output)
    assert set(terms) == {"m2skd_teacher_ce", "m2skd_logit", "m2skd_affinity"}
    for name, value in terms.items():  # no changed labels, equal logits, equal affinities
        assert value.item() == pytest.approx(0.0, abs=1e-6), name


def test_joint_teacher_view_is_trained_on_changed_voxels_only():
    model, batch = _model(), _batch(with_fused=True)
    seen = batch.student_view()
    output = model(seen.points, seen.batch_index, seen.batch_size)
    joint = m2skd.JointM2skd(model, num_classes=20)
    assert list(joint.parameters()) == []  # the shared model is not optimised twice
    terms = joint(batch, output)
    # The fused person lands in voxels the scan does not fill: those voxels (and only those) changed.
    teacher = model(batch.points, batch.batch_index, batch.batch_size)
    fused_voxels = torch.unique(teacher.point_to_voxel[batch.is_fused])
    expected_ce = 0.2 * F.cross_entropy(teacher.voxel_logits[fused_voxels], torch.full((len(fused_voxels),), PERSON))
    assert terms["m2skd_teacher_ce"].item() == pytest.approx(expected_ce.item(), rel=1e-4)
    model.zero_grad()
    terms["m2skd_teacher_ce"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
