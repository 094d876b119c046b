"""Response-based distillation loss (DESIGN.md, "The distillation").

    total = λ_det · v8DetectionLoss(student, ground truth) + λ_distill · (λ_ciou · L_box + λ_kl · L_cls)

The teacher's NMS-kept detections are pseudo-targets that keep the teacher's raw class logits; student anchors
are matched to them with ultralytics' task-aligned assigner (so the teacher's grid may differ from the
student's); L_box is a weighted mean of 1 − CIoU and L_cls a weighted mean of the per-class Bernoulli KL at
temperature T, scaled by T². Weights are teacher confidence × assignment quality. The KL's teacher side is the
kept detection's logit vector, or with ``distill.cls_target=anchor`` the teacher's own logits at each matched
anchor (BENCHMARKS.md has why: the first gives every matched anchor the best anchor's score).

The criterion is attached to the live student only. Copies of the student (the EMA, checkpoints) get
``None`` in its place, so a checkpoint never holds the teacher and loads as a plain ultralytics model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DistillSettings

KD_LOSS_NAMES = ("kd_box", "kd_cls")
log = logging.getLogger("wildfire_kd")


def bernoulli_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Σ_classes KL(Bernoulli(σ(t/T)) ‖ Bernoulli(σ(s/T))) · T², over the last dim.

    YOLOv8 scores each class with its own sigmoid, so each class is a Bernoulli variable. (A softmax KL over
    classes is identically zero with one class.) Written with logsigmoid so large logits stay finite.
    """
    t = teacher_logits.float() / temperature
    s = student_logits.float() / temperature
    p = torch.sigmoid(t)
    # KL = p·(log p − log q) + (1−p)·(log(1−p) − log(1−q)); log(1−σ(x)) = logsigmoid(−x)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.sum(-1) * temperature**2


def ciou_loss(student_boxes: torch.Tensor, teacher_boxes: torch.Tensor) -> torch.Tensor:
    """1 − CIoU for paired xyxy boxes (..., 4) -> (...)."""
    from ultralytics.utils.metrics import bbox_iou

    return 1.0 - bbox_iou(student_boxes.float(), teacher_boxes.float(), xywh=False, CIoU=True).squeeze(-1)


@dataclass
class TeacherTargets:
    """The teacher's kept detections, padded to (batch, max_kept, ...)."""

    boxes: torch.Tensor  # xyxy pixels (B, M, 4)
    labels: torch.Tensor  # argmax class (B, M, 1)
    conf: torch.Tensor  # NMS confidence (B, M)
    logits: torch.Tensor  # raw class logits (B, M, nc)
    mask: torch.Tensor  # valid entries (B, M, 1)
    count: int  # kept detections in the whole batch
    anchor_logits: torch.Tensor | None = None  # the teacher's raw logits at every anchor (B, A, nc)


@torch.no_grad()
def teacher_forward(teacher: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen teacher on the batch: (decoded (B, 4 + nc, A), raw class logits (B, nc, A))."""
    decoded, raw = teacher(images)  # eval mode: ((B, 4 + nc, A) decoded, dict of raw outputs)
    return decoded, raw["scores"]


@torch.no_grad()
def pseudo_targets(decoded: torch.Tensor, logits: torch.Tensor, settings: DistillSettings) -> TeacherTargets:
    """NMS on the teacher's output, keeping each kept detection's box, confidence and raw logit vector."""
    from ultralytics.utils.nms import non_max_suppression

    kept, keep_idx = non_max_suppression(
        decoded,
        conf_thres=settings.teacher_conf,
        iou_thres=settings.teacher_iou,
        max_det=settings.teacher_max_det,
        max_time_img=10.0,  # never drop pseudo-targets to a wall-clock limit (slow CPUs)
        return_idxs=True,
    )
    bs, nc = logits.shape[:2]
    m = max((len(k) for k in kept), default=0)
    device = decoded.device
    boxes = torch.zeros(bs, m, 4, device=device)
    labels = torch.zeros(bs, m, 1, device=device)
    conf = torch.zeros(bs, m, device=device)
    kept_logits = torch.zeros(bs, m, nc, device=device)
    mask = torch.zeros(bs, m, 1, dtype=torch.bool, device=device)
    for b, (det, idx) in enumerate(zip(kept, keep_idx, strict=True)):  # per image, all its boxes at once
        n = len(det)
        if n:
            boxes[b, :n] = det[:, :4]
            conf[b, :n] = det[:, 4]
            labels[b, :n, 0] = det[:, 5]
            kept_logits[b, :n] = logits[b, :, idx.long()].T.float()
            mask[b, :n] = True
    anchor_logits = logits.permute(0, 2, 1).float() if settings.cls_target == "anchor" else None
    return TeacherTargets(boxes, labels, conf, kept_logits, mask, sum(len(k) for k in kept), anchor_logits)


def teacher_targets(teacher: nn.Module, images: torch.Tensor, settings: DistillSettings) -> TeacherTargets:
    """Run the frozen teacher and turn its output into padded pseudo-targets with their class logits."""
    return pseudo_targets(*teacher_forward(teacher, images), settings)


@dataclass
class Match:
    """Student anchors assigned to teacher boxes by the task-aligned assigner."""

    fg_mask: torch.Tensor  # (B, A) matched anchors
    target_bboxes: torch.Tensor  # (B, A, 4) matched teacher box, xyxy pixels
    target_gt_idx: torch.Tensor  # (B, A) index of the matched teacher box
    weight: torch.Tensor  # (F,) teacher confidence x assignment quality, per matched anchor


class ResponseKDLoss:
    """ultralytics-compatible criterion: ``(preds, batch) -> (loss vector × batch size, loss items)``.

    Wraps the student's own v8DetectionLoss for the ground-truth term and adds the two KD terms. The
    trainer sums the vector; the items (detached, per image) feed the progress bar, results.csv and the
    per-batch log.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, settings: DistillSettings):
        from ultralytics.utils.loss import v8DetectionLoss
        from ultralytics.utils.tal import TaskAlignedAssigner

        self.detection = v8DetectionLoss(student)
        self.teacher = teacher
        self.settings = settings
        self.assigner = TaskAlignedAssigner(
            topk=settings.topk,
            num_classes=self.detection.nc,
            alpha=0.5,
            beta=6.0,
            stride=self.detection.stride.tolist(),
        )
        self.last_teacher_detections = 0.0  # per image, for the batch log
        self._grid_warned = False

    def __deepcopy__(self, memo):
        # ModelEMA and checkpoint snapshots deepcopy the student: they must not carry the teacher along.
        return None

    def __getstate__(self):
        raise TypeError("ResponseKDLoss holds the teacher and must never be pickled into a checkpoint")

    def __call__(self, preds, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        preds = self.detection.parse_output(preds)
        det_loss, items = self.detection.loss(preds, batch)  # already × batch size
        kd_box, kd_cls = self.kd_terms(preds, batch["img"])
        s = self.settings
        bs = batch["img"].shape[0]
        kd = torch.stack([s.lambda_dist_ciou * kd_box, s.lambda_dist_kl * kd_cls]) * (s.lambda_distillation * bs)
        loss = torch.cat([det_loss * s.lambda_detection, kd.to(det_loss.dtype)])
        items = {**items, "kd_box": kd_box.detach(), "kd_cls": kd_cls.detach()}
        return loss, items

    def student_outputs(self, preds: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class logits (B, A, nc), decoded boxes xyxy pixels (B, A, 4), anchor points, strides) of the student."""
        from ultralytics.utils.tal import make_anchors

        det = self.detection
        pred_distri = preds["boxes"].permute(0, 2, 1).contiguous()
        pred_logits = preds["scores"].permute(0, 2, 1).contiguous()
        anchor_points, stride_tensor = make_anchors(preds["feats"], det.stride, 0.5)
        pred_bboxes = det.bbox_decode(anchor_points, pred_distri) * stride_tensor
        return pred_logits, pred_bboxes, anchor_points, stride_tensor

    def match(self, pred_logits, pred_bboxes, anchor_points, stride_tensor, targets: TeacherTargets) -> Match:
        """Assign student anchors to teacher boxes (top-k per box), batched over the whole batch."""
        _, target_bboxes, target_scores, fg_mask, target_gt_idx = self.assigner(
            pred_logits.detach().sigmoid(),
            pred_bboxes.detach().type(targets.boxes.dtype),
            anchor_points * stride_tensor,
            targets.labels,
            targets.boxes,
            targets.mask,
        )
        # assignment quality: the assigner's normalised alignment metric, carried on the one-hot class slot
        quality = target_scores.sum(-1)
        weight = (targets.conf.gather(1, target_gt_idx.long()) * quality)[fg_mask]
        return Match(fg_mask, target_bboxes, target_gt_idx.long(), weight)

    def losses(self, pred_logits, pred_bboxes, targets: TeacherTargets, match: Match):
        """(L_box, L_cls): weighted means of 1 - CIoU and of the per-class Bernoulli KL at T, scaled by T^2."""
        fg = match.fg_mask
        weight_sum = match.weight.sum().clamp(min=1e-9)
        box_term = (ciou_loss(pred_bboxes[fg], match.target_bboxes[fg]) * match.weight).sum() / weight_sum
        nc = pred_logits.shape[-1]
        if targets.anchor_logits is not None and targets.anchor_logits.shape == pred_logits.shape:
            # v8 heads of any scale share strides 8/16/32, so anchor i is the same cell for teacher and student
            matched_logits = targets.anchor_logits
        else:
            if targets.anchor_logits is not None and not self._grid_warned:
                self._grid_warned = True
                log.warning(
                    "distill.cls_target=anchor: teacher has %d anchors, student %d; using the detection's logits",
                    targets.anchor_logits.shape[1],
                    pred_logits.shape[1],
                )
            matched_logits = targets.logits.gather(1, match.target_gt_idx.unsqueeze(-1).expand(-1, -1, nc))
        kl = bernoulli_kl(matched_logits[fg], pred_logits[fg], self.settings.temperature)
        return box_term, (kl * match.weight).sum() / weight_sum

    def kd_terms(self, preds: dict, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_box, L_cls) for a batch: both exactly 0 when the teacher keeps no detection."""
        zero = torch.zeros((), device=images.device)
        teacher_dtype = next(self.teacher.parameters()).dtype
        if images.dtype != teacher_dtype:  # fp16 validation batches: run the fp32 teacher under autocast
            with torch.autocast(images.device.type, dtype=images.dtype, enabled=images.device.type == "cuda"):
                targets = teacher_targets(self.teacher, images.to(teacher_dtype), self.settings)
        else:
            targets = teacher_targets(self.teacher, images, self.settings)
        self.last_teacher_detections = targets.count / images.shape[0]
        if targets.count == 0:
            return zero, zero
        pred_logits, pred_bboxes, anchor_points, stride_tensor = self.student_outputs(preds)
        match = self.match(pred_logits, pred_bboxes, anchor_points, stride_tensor, targets)
        if not match.fg_mask.any():
            return zero, zero
        return self.losses(pred_logits, pred_bboxes, targets, match)
