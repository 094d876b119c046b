"""The distillation loss on hand-made tensors and on tiny real models (CPU, seconds)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.distributions import Bernoulli, kl_divergence

from wildfire_kd.config import DistillSettings
from wildfire_kd.distill.loss import ResponseKDLoss, bernoulli_kl, ciou_loss, teacher_targets


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
    targets = teacher_targets(teacher, images, DistillSettings(teacher_conf=0.001))
    assert targets.count > 0
    decoded, raw = teacher(images)
    b, j = torch.nonzero(targets.mask[..., 0])[0]
    # the kept logit vector is the raw logit column of some anchor whose sigmoid is the kept confidence
    column = (raw["scores"][b].T - targets.logits[b, j]).abs().sum(-1).argmin()
    assert torch.allclose(raw["scores"][b, :, column], targets.logits[b, j])
    assert torch.isclose(targets.logits[b, j].sigmoid().max(), targets.conf[b, j], atol=1e-5)


def test_criterion_gives_positive_kd_terms_and_no_teacher_gradients(pair):
    student, teacher = pair
    criterion = ResponseKDLoss(student, teacher, DistillSettings(teacher_conf=0.001))
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
    base, items = ResponseKDLoss(student, teacher, DistillSettings(teacher_conf=0.001))(preds, batch)
    settings = DistillSettings(
        teacher_conf=0.001, lambda_detection=0.5, lambda_distillation=3.0, lambda_dist_ciou=2.0, lambda_dist_kl=0.25
    )
    scaled, _ = ResponseKDLoss(student, teacher, settings)(preds, batch)
    bs = batch["img"].shape[0]
    assert torch.allclose(scaled[:3], base[:3] * 0.5)
    assert torch.isclose(scaled[3], items["kd_box"] * 3.0 * 2.0 * bs, rtol=1e-4)
    assert torch.isclose(scaled[4], items["kd_cls"] * 3.0 * 0.25 * bs, rtol=1e-4)
    assert torch.isclose(base[3], items["kd_box"] * 2.0 * 1.0 * bs, rtol=1e-4)  # defaults λ 2.0 / 1.0 / 2.0


def test_no_teacher_detections_gives_exact_zero_and_finite_gradients(pair):
    student, teacher = pair
    criterion = ResponseKDLoss(student, teacher, DistillSettings(teacher_conf=1.0))  # nothing passes conf 1.0
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
    settings = DistillSettings(teacher_conf=0.001)
    batch = _batch()
    student.eval()  # BatchNorm in eval: identical numerics to the teacher
    _, same = ResponseKDLoss(student, teacher, settings)(student(batch["img"]), batch)
    other.eval()
    _, diff = ResponseKDLoss(other, teacher, settings)(other(batch["img"]), batch)
    assert same["kd_box"] < diff["kd_box"]
    assert same["kd_cls"] < diff["kd_cls"]


def test_copies_of_the_student_never_carry_the_teacher(pair):
    student, teacher = pair
    s = copy.deepcopy(student)
    s.criterion = ResponseKDLoss(s, teacher, DistillSettings())
    assert copy.deepcopy(s).criterion is None  # EMA and checkpoint snapshots get the plain loss back
    with pytest.raises(TypeError, match="must never be pickled"):
        pickle.dumps(s.criterion)


def test_teacher_runs_under_the_students_autocast(pair):
    student, teacher = pair
    dtypes = []
    # a convolution's output shows the compute dtype (the head's decoded output follows its cached fp32 anchors)
    handle = teacher.model[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    try:
        criterion = ResponseKDLoss(student, teacher, DistillSettings(teacher_conf=0.001))
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
    _, per_anchor = ResponseKDLoss(student, teacher, DistillSettings(teacher_conf=0.001, cls_target="anchor"))(
        preds, batch
    )
    _, per_detection = ResponseKDLoss(student, teacher, DistillSettings(teacher_conf=0.001))(preds, batch)
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
        _, anchor = ResponseKDLoss(student, teacher, DistillSettings(teacher_conf=0.001, cls_target="anchor"))(
            preds, batch
        )
    _, detection = ResponseKDLoss(student, teacher, DistillSettings(teacher_conf=0.001))(preds, batch)
    assert anchor["kd_cls"] > 0 and torch.isclose(anchor["kd_cls"], detection["kd_cls"])
    assert "using the detection's logits" in caplog.text
