"""The distillation loss on hand-made tensors and on tiny real models (CPU, seconds)."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, kl_divergence

from wildfire_kd.config import DistillSettings
from wildfire_kd.distill.loss import (
    DenseKDLoss,
    PseudoTargetKDLoss,
    bernoulli_kl,
    check_dense_compatible,
    ciou_loss,
    dfl_kl,
    kd_alpha,
    make_criterion,
    pseudo_targets,
    quality_focal_kd,
    teacher_forward,
)
from wildfire_kd.errors import InputError


def _reference_kl(t: torch.Tensor, s: torch.Tensor, temperature: float) -> torch.Tensor:
    p, q = Bernoulli(logits=t / temperature), Bernoulli(logits=s / temperature)
    return kl_divergence(p, q).sum(-1) * temperature**2


@pytest.mark.parametrize("nc", [1, 2, 5])
def test_kl_is_zero_for_equal_logits(nc):
    logits = torch.randn(7, nc) * 4
    assert torch.allclose(bernoulli_kl(logits, logits.clone(), 2.0), torch.zeros(7), atol=1e-6)


@pytest.mark.parametrize("nc", [1, 2])
def test_kl_is_positive_and_matches_torch_distributions(nc):
    torch.manual_seed(0)
    t, s = torch.randn(11, nc) * 3, torch.randn(11, nc) * 3
    kl = bernoulli_kl(t, s, 2.0)
    assert (kl > 0).all()
    assert torch.allclose(kl, _reference_kl(t, s, 2.0), rtol=1e-4, atol=1e-6)


def test_one_class_kl_is_not_the_degenerate_softmax_kl():
    t, s = torch.tensor([[3.0]]), torch.tensor([[-1.0]])
    softmax_kl = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="sum")
    assert softmax_kl == 0  # what the design forbids: a one-class softmax KL never teaches anything
    assert bernoulli_kl(t, s, 2.0).item() > 0.1


def test_kl_carries_the_t_squared_factor():
    t, s = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 1.5]])
    for temperature in (1.0, 2.0, 4.0):
        raw = _reference_kl(t / temperature, s / temperature, 1.0)  # KL of the softened distributions, unscaled
        assert torch.allclose(bernoulli_kl(t, s, temperature), raw * temperature**2, rtol=1e-5)


def test_kl_stays_finite_for_extreme_logits():
    t, s = torch.tensor([[80.0, -80.0]]), torch.tensor([[-80.0, 80.0]])
    kl = bernoulli_kl(t, s, 1.0)
    assert torch.isfinite(kl).all() and kl.item() > 100


def test_ciou_loss_zero_for_identical_boxes_and_large_for_disjoint():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0], [0.0, 0.0, 5.0, 5.0]])
    assert torch.allclose(ciou_loss(boxes, boxes.clone()), torch.zeros(2), atol=1e-5)
    far = boxes + 200
    assert (ciou_loss(boxes, far) > 1.0).all()


# --- the criterion on tiny real models -------------------------------------------------------------------------


def _pseudo(**settings) -> DistillSettings:
    return DistillSettings(method="pseudo", **settings)


def _model(cfg: str, nc: int = 2):
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    m = DetectionModel(cfg, nc=nc, verbose=False)
    m.args = get_cfg()
    return m


def _perturbed(model, scale: float = 0.05):
    """``model`` with seeded Gaussian noise added to every parameter, in place."""
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def _batch(bs: int = 2, size: int = 64) -> dict:
    torch.manual_seed(1)
    return {
        "img": torch.rand(bs, 3, size, size),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[0.0], [1.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.3]]),
    }


@pytest.fixture(scope="module")
def pair():
    teacher = _model("yolov8s.yaml").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return _model("yolov8n.yaml").train(), teacher


def test_teacher_targets_keep_the_teachers_class_logits(pair):
    _, teacher = pair
    images = _batch()["img"]
    decoded, raw = teacher_forward(teacher, images)
    targets = pseudo_targets(decoded, raw["scores"], _pseudo(teacher_conf=0.001))
    assert targets.count > 0
    b, j = torch.nonzero(targets.mask[..., 0])[0]
    # the kept logit vector is the raw logit column of some anchor whose sigmoid is the kept confidence
    column = (raw["scores"][b].T - targets.logits[b, j]).abs().sum(-1).argmin()
    assert torch.allclose(raw["scores"][b, :, column], targets.logits[b, j])
    assert torch.isclose(targets.logits[b, j].sigmoid().max(), targets.conf[b, j], atol=1e-5)


def test_criterion_gives_positive_kd_terms_and_no_teacher_gradients(pair):
    student, teacher = pair
    criterion = PseudoTargetKDLoss(student, teacher, _pseudo(teacher_conf=0.001))
    batch = _batch()
    before = copy.deepcopy(teacher.state_dict())
    loss, items = criterion(student(batch["img"]), batch)
    assert loss.shape == (5,) and torch.isfinite(loss).all()
    assert items["kd_box"] > 0 and items["kd_cls"] > 0
    assert set(items) == {"box_loss", "cls_loss", "dfl_loss", "kd_box", "kd_cls"}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    loss.sum().backward()
    optimizer.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    student.zero_grad()


def test_lambda_weights_scale_the_loss_vector(pair):
    student, teacher = pair
    batch = _batch()
    preds = student(batch["img"])
    base, items = PseudoTargetKDLoss(student, teacher, _pseudo(teacher_conf=0.001))(preds, batch)
    settings = _pseudo(
        teacher_conf=0.001, lambda_detection=0.5, lambda_distillation=3.0, lambda_dist_ciou=2.0, lambda_dist_kl=0.25
    )
    scaled, _ = PseudoTargetKDLoss(student, teacher, settings)(preds, batch)
    bs = batch["img"].shape[0]
    assert torch.allclose(scaled[:3], base[:3] * 0.5)
    assert torch.isclose(scaled[3], items["kd_box"] * 3.0 * 2.0 * bs, rtol=1e-4)
    assert torch.isclose(scaled[4], items["kd_cls"] * 3.0 * 0.25 * bs, rtol=1e-4)
    assert torch.isclose(base[3], items["kd_box"] * 2.0 * 1.0 * bs, rtol=1e-4)  # defaults λ 2.0 / 1.0 / 2.0


def test_no_teacher_detections_gives_exact_zero_and_finite_gradients(pair):
    student, teacher = pair
    criterion = PseudoTargetKDLoss(student, teacher, _pseudo(teacher_conf=1.0))  # nothing passes conf 1.0
    batch = _batch()
    loss, items = criterion(student(batch["img"]), batch)
    assert items["kd_box"].item() == 0.0 and items["kd_cls"].item() == 0.0
    assert loss[3].item() == 0.0 and loss[4].item() == 0.0
    assert criterion.last_teacher_detections == 0
    loss.sum().backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    student.zero_grad()


def test_kd_terms_shrink_when_the_student_is_the_teacher():
    # a student that *is* its teacher matches the teacher's boxes almost exactly
    teacher = _model("yolov8n.yaml").eval()
    student = copy.deepcopy(teacher).train()
    other = _perturbed(_model("yolov8n.yaml")).train()
    settings = _pseudo(teacher_conf=0.001)
    batch = _batch()
    student.eval()  # BatchNorm in eval: identical numerics to the teacher
    _, same = PseudoTargetKDLoss(student, teacher, settings)(student(batch["img"]), batch)
    other.eval()
    _, diff = PseudoTargetKDLoss(other, teacher, settings)(other(batch["img"]), batch)
    assert same["kd_box"] < diff["kd_box"]
    assert same["kd_cls"] < diff["kd_cls"]


def test_copies_of_the_student_never_carry_the_teacher(pair):
    student, teacher = pair
    s = copy.deepcopy(student)
    s.criterion = make_criterion(s, teacher, DistillSettings())
    assert copy.deepcopy(s).criterion is None  # EMA and checkpoint snapshots get the plain loss back
    with pytest.raises(TypeError, match="must never be pickled"):
        pickle.dumps(s.criterion)


def test_teacher_runs_under_the_students_autocast(pair):
    student, teacher = pair
    dtypes = []
    # a convolution's output shows the compute dtype (the head's decoded output follows its cached fp32 anchors)
    handle = teacher.model[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    try:
        criterion = PseudoTargetKDLoss(student, teacher, _pseudo(teacher_conf=0.001))
        batch = _batch()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, items = criterion(student(batch["img"]), batch)
    finally:
        handle.remove()
    assert dtypes == [torch.bfloat16], "the teacher forward shares the student's autocast"
    assert torch.isfinite(loss).all() and items["kd_cls"] > 0


def test_anchor_cls_target_is_exactly_the_teachers_logits_at_each_anchor():
    # a student that is its teacher: the teacher's logits at each matched anchor are the student's own, so the
    # per-anchor KL vanishes, while the kept detection's vector differs from the other matched anchors' logits
    # an untrained head scores nothing above the threshold: perturb it into detecting
    teacher = _perturbed(_model("yolov8n.yaml")).eval()
    student = copy.deepcopy(teacher).eval()
    batch = _batch()
    preds = student(batch["img"])
    _, per_anchor = PseudoTargetKDLoss(student, teacher, _pseudo(teacher_conf=0.001, cls_target="anchor"))(preds, batch)
    _, per_detection = PseudoTargetKDLoss(student, teacher, _pseudo(teacher_conf=0.001))(preds, batch)
    assert per_detection["kd_box"] > 0  # the teacher kept detections
    assert per_anchor["kd_cls"].item() == 0.0  # identical logits, bit for bit
    assert per_detection["kd_cls"].item() > 0.0
    assert torch.isclose(per_anchor["kd_box"], per_detection["kd_box"])  # the box term does not change


def test_anchor_cls_target_falls_back_to_the_detection_when_the_grids_differ(pair, caplog):
    student, _ = pair
    teacher = _model("yolov8n-p6.yaml").eval()  # a fourth level (stride 64): more anchors than the student
    batch = _batch()
    preds = student(batch["img"])
    with caplog.at_level("WARNING", logger="wildfire_kd"):
        _, anchor = PseudoTargetKDLoss(student, teacher, _pseudo(teacher_conf=0.001, cls_target="anchor"))(preds, batch)
    _, detection = PseudoTargetKDLoss(student, teacher, _pseudo(teacher_conf=0.001))(preds, batch)
    assert anchor["kd_cls"] > 0 and torch.isclose(anchor["kd_cls"], detection["kd_cls"])
    assert "using the detection's logits" in caplog.text


# --- dense: every anchor, class scores (QFL) and DFL bins (LD) ------------------------------------------------------


def test_quality_focal_kd_is_zero_at_agreement_and_matches_the_formula():
    t = torch.tensor([[2.0, -3.0]])
    assert torch.equal(quality_focal_kd(t.clone(), t, beta=2.0), torch.zeros(1, 2))
    s = torch.tensor([[0.0, -3.0]])  # σ(0) = 0.5 against σ(2) = 0.8808
    p = torch.sigmoid(torch.tensor(2.0))
    bce = -(p * torch.log(torch.tensor(0.5)) + (1 - p) * torch.log(torch.tensor(0.5)))
    expected = bce * (0.5 - p).abs() ** 2
    assert torch.isclose(quality_focal_kd(s, t, beta=2.0)[0, 0], expected, rtol=1e-5)


def test_quality_focal_kd_with_one_class_is_not_zero():
    # the design forbids a softmax over classes: with nc=1 it is identically 0; per-class sigmoids are not
    t, s = torch.tensor([[3.0]]), torch.tensor([[-1.0]])
    assert quality_focal_kd(s, t, beta=2.0).item() > 0.1


def test_ld_term_equals_a_hand_computed_kl():
    # reg_max 2: 4 sides x 2 bins. Side 0: teacher softmax (0.75, 0.25), student (0.5, 0.5); sides 1-3 agree.
    t = torch.tensor([[math.log(3.0), 0.0, 1.0, 2.0, 0.0, 0.0, -1.0, 1.0]])
    s = torch.tensor([[0.0, 0.0, 1.0, 2.0, 0.0, 0.0, -1.0, 1.0]])
    kl_side0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.130812
    assert dfl_kl(s, t, temperature=1.0).item() == pytest.approx(kl_side0 / 4, rel=1e-5)


def test_ld_term_matches_torch_distributions_with_temperature():
    torch.manual_seed(0)
    t, s = torch.randn(3, 5, 64) * 3, torch.randn(3, 5, 64) * 3  # (B, A, 4 x 16 bins)
    temperature = 2.0
    p = Categorical(logits=t.view(3, 5, 4, 16) / temperature)
    q = Categorical(logits=s.view(3, 5, 4, 16) / temperature)
    expected = kl_divergence(p, q).mean(-1) * temperature**2
    assert torch.allclose(dfl_kl(s, t, temperature), expected, rtol=1e-4, atol=1e-6)


def test_dense_ld_is_the_teacher_confidence_weighted_mean(pair):
    # two anchors, one class: weights w = max_c σ(t) = 0.5 and 0.75
    student, teacher = pair
    criterion = DenseKDLoss(student, teacher, DistillSettings())  # the box term is off by default
    t_bins = torch.zeros(1, 64, 2)
    t_bins[0, 0, 0] = 1.0  # anchor 0, side 0 differs from the student's uniform bins
    t_bins[0, 16, 1] = 2.0  # anchor 1, side 1
    s_bins = torch.zeros(1, 64, 2)
    t_scores = torch.tensor([[[0.0, math.log(3.0)]]])  # (B, nc, A): σ = 0.5, 0.75
    terms = criterion.terms({"scores": t_scores.clone(), "boxes": s_bins}, None, {"scores": t_scores, "boxes": t_bins})
    per_anchor = dfl_kl(s_bins.permute(0, 2, 1), t_bins.permute(0, 2, 1), 1.0)[0]
    assert per_anchor.gt(0).all()
    assert terms["kd_ld"].item() == pytest.approx(
        ((0.5 * per_anchor[0] + 0.75 * per_anchor[1]) / 1.25).item(), rel=1e-5
    )
    assert terms["kd_cls"].item() == 0.0 and terms["kd_box"].item() == 0.0  # same scores; box term off


def test_dense_terms_are_zero_when_the_student_is_the_teacher():
    teacher = _perturbed(_model("yolov8n.yaml")).eval()  # perturbed: an untrained head scores ~0 everywhere
    student = copy.deepcopy(teacher).eval()  # BatchNorm in eval: identical numerics to the teacher
    batch = _batch()
    _, items = DenseKDLoss(student, teacher, DistillSettings(lambda_dist_ciou=1))(student(batch["img"]), batch)
    assert items["kd_cls"].item() == 0.0 and items["kd_ld"].item() == 0.0
    assert items["kd_box"].item() == pytest.approx(0.0, abs=1e-6)  # 1 - CIoU of a box with itself (eps in IoU)
    other = _perturbed(_model("yolov8n.yaml"), scale=0.1).eval()
    _, diff = DenseKDLoss(other, teacher, DistillSettings(lambda_dist_ciou=1))(other(batch["img"]), batch)
    assert all(diff[k] > 1e-4 for k in ("kd_cls", "kd_ld", "kd_box"))


def test_dense_gradients_reach_the_student_from_every_term_and_never_the_teacher(pair):
    student, _ = pair
    # perturbed: scores away from the untrained ~0, a class term to teach; requires_grad left on, so only the
    # criterion's no_grad keeps gradients out of the teacher
    teacher = _perturbed(_model("yolov8s.yaml")).eval()
    criterion = DenseKDLoss(student, teacher, DistillSettings(lambda_dist_ciou=1))
    batch = _batch()
    before = copy.deepcopy(teacher.state_dict())
    preds = criterion.detection.parse_output(student(batch["img"]))
    criterion.detection.loss(preds, batch)  # records the normaliser, as the criterion's own call does
    terms = criterion.kd_terms(preds, batch["img"])
    head = student.model[-1]
    for name, term in terms.items():
        student.zero_grad(set_to_none=True)
        term.backward(retain_graph=True)
        grads = [p.grad for p in head.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"{name} sends no gradient to the student"
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    student.zero_grad(set_to_none=True)


@pytest.mark.parametrize("normaliser", ["foreground", "target_scores"])
def test_dense_class_term_is_normalised_by_the_ground_truth_assignment(pair, normaliser):
    student, teacher = pair
    criterion = DenseKDLoss(student, teacher, DistillSettings(cls_normaliser=normaliser))
    batch = _batch()
    preds = student(batch["img"])
    _, items = criterion(preds, batch)
    # the student's own ground-truth assignment on this batch, as ultralytics' loss computes it
    det = criterion.detection
    assigned = []
    handle = det.assigner.register_forward_hook(lambda m, i, o: assigned.append(o))
    det.loss(preds, batch)
    handle.remove()
    _, _, target_scores, fg_mask, _ = assigned[0]
    expected = (fg_mask if normaliser == "foreground" else target_scores).float().sum().clamp(min=1)
    assert torch.isclose(torch.as_tensor(criterion.cls_normaliser), expected)
    if normaliser == "foreground":
        assert expected >= 2  # two ground-truth boxes, several anchors each: a count, not clamped
    raw = teacher(batch["img"])[1]
    unnormalised = quality_focal_kd(preds["scores"].permute(0, 2, 1), raw["scores"].permute(0, 2, 1), 2.0).sum()
    assert torch.isclose(items["kd_cls"], unnormalised / expected, rtol=1e-5)


def test_dense_one_class_gives_a_nonzero_class_term():
    teacher = _model("yolov8s.yaml", nc=1).eval()
    with torch.no_grad():  # an untrained head scores σ ≈ 0.001 everywhere, like the student: make it sure of smoke
        for cls_conv in teacher.model[-1].cv3:
            cls_conv[-1].bias.fill_(0.0)
    student = _model("yolov8n.yaml", nc=1).train()
    batch = _batch()
    batch["cls"] = torch.zeros(2, 1)
    _, items = DenseKDLoss(student, teacher, DistillSettings())(student(batch["img"]), batch)
    assert items["kd_cls"] > 1e-4


def test_dense_loss_vector_carries_alpha_and_the_lambdas(pair):
    student, teacher = pair
    batch = _batch()
    preds = student(batch["img"])
    settings = DistillSettings(
        lambda_detection=0.5, lambda_distillation=3.0, lambda_dist_kl=2.0, lambda_dist_ld=4.0, lambda_dist_ciou=1.0
    )
    criterion = DenseKDLoss(student, teacher, settings)
    criterion.alpha = 0.25
    loss, items = criterion(preds, batch)
    det, _ = DenseKDLoss(student, teacher, DistillSettings())(preds, batch)
    bs = batch["img"].shape[0]
    assert loss.shape == (6,) and list(items)[3:] == ["kd_cls", "kd_ld", "kd_box"]
    assert torch.allclose(loss[:3], det[:3] * 0.5)
    for i, (name, lam) in enumerate((("kd_cls", 2.0), ("kd_ld", 4.0), ("kd_box", 1.0)), start=3):
        assert torch.isclose(loss[i], items[name] * 0.25 * 3.0 * lam * bs, rtol=1e-5), name


def test_box_term_defaults_off_for_dense_and_on_for_pseudo(pair):
    student, teacher = pair
    batch = _batch()
    assert DistillSettings().box_weight == 0.0 and _pseudo().box_weight == 1.0  # pseudo keeps its box term
    assert DistillSettings(lambda_dist_ciou=0.5).box_weight == 0.5 == _pseudo(lambda_dist_ciou=0.5).box_weight
    _, items = DenseKDLoss(student, teacher, DistillSettings())(student(batch["img"]), batch)
    assert items["kd_box"].item() == 0.0 and items["kd_ld"] > 0


def test_dense_refuses_a_teacher_with_other_strides(pair):
    student, _ = pair
    p6 = _model("yolov8n-p6.yaml").eval()  # a fourth level, stride 64
    with pytest.raises(InputError, match=r"strides \[8.0, 16.0, 32.0, 64.0\].*\[8.0, 16.0, 32.0\].*method=pseudo"):
        check_dense_compatible(p6, student, "p6.pt")
    with pytest.raises(InputError, match="distill.method=pseudo"):
        make_criterion(student, p6, DistillSettings(method="dense"))
    assert isinstance(make_criterion(student, p6, DistillSettings(method="pseudo")), PseudoTargetKDLoss)


def test_kd_alpha_schedules():
    assert [kd_alpha("constant", e, 10) for e in (0, 5, 9)] == [1.0, 1.0, 1.0]
    cosine = [kd_alpha("cosine", e, 11) for e in range(11)]
    assert cosine[0] == 1.0 and cosine[-1] == pytest.approx(0.01) and cosine[5] == pytest.approx(0.505)
    assert all(a > b for a, b in zip(cosine, cosine[1:], strict=False))
    assert kd_alpha("cosine", 0, 1) == 1.0  # a one-epoch run keeps its KD terms
