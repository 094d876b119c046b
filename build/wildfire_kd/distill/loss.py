"""Response-based distillation losses (docs/design.md, "The distillation"): `dense` and `pseudo`.

    total = λ_det · v8DetectionLoss(student, ground truth) + α(epoch) · λ_distill · Σ_term λ_term · L_term

``dense`` (the default, :class:`DenseKDLoss`) compares teacher and student at every anchor: YOLOv8 heads of every
scale share strides 8/16/32, so at the same imgsz anchor i is the same cell in both. Its terms are

- ``kd_cls``: PP-YOLOE's distillation of the per-class sigmoid scores, Σ BCEWithLogits(s, σ(t)) · |σ(s) − σ(t)|^β
  over anchors and classes, divided by the number of the student's foreground anchors in its ground-truth
  assignment, as PP-YOLOE does (``distill.cls_normaliser=target_scores``: ultralytics' cls-loss normaliser, the
  ground truth's ``target_scores_sum``, which the first spec named; it is ~1 while the student's boxes are poor, and
  the term then swamps the ground truth: BENCHMARKS.md). Both clamped ≥ 1;
- ``kd_ld``: localization distillation, per anchor the mean over the 4 sides of
  KL(softmax(t_bins / T_ld) ‖ softmax(s_bins / T_ld)) · T_ld², weighted by w = max_c σ(t), divided by Σ w;
- ``kd_box``: 1 − CIoU of the student's and the teacher's decoded boxes at the same anchor, same weights w.

``pseudo`` (the first spec's method, :class:`PseudoTargetKDLoss`) turns the teacher's NMS-kept detections into
pseudo-targets that keep the teacher's raw class logits, matches student anchors to them with ultralytics'
task-aligned assigner, and has ``kd_box`` (weighted 1 − CIoU) and ``kd_cls`` (weighted per-class Bernoulli KL at
temperature T, × T²; the teacher side is the kept detection's logit vector, or with ``distill.cls_target=anchor``
the teacher's own logits at each matched anchor). Weights are teacher confidence × assignment quality.

A criterion is attached to the live student only. Copies of the student (the EMA, checkpoints) get ``None`` in its
place, so a checkpoint never holds the teacher and loads as a plain ultralytics model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import seam
from ..config import DistillSettings
from ..errors import InputError

log = logging.getLogger("wildfire_kd")

# each KD term and the DistillSettings attribute that is its weight inside the KD sum
TERM_WEIGHTS = {"kd_cls": "cls_weight", "kd_ld": "lambda_dist_ld", "kd_box": "box_weight"}
UNLABELED_SUFFIX = "_u"  # a KD term on the unlabelled pool's frames: kd_cls_u, kd_ld_u, kd_box_u
NORMALISER_MOMENTUM = 0.9  # the running mean of the class term's divisor per labelled image (for pool frames)
ALPHA_END = 0.01  # the cosine schedule's α in the last epoch


def kd_alpha(schedule: str, epoch: int, epochs: int) -> float:
    """α(epoch) of the KD sum: 1 throughout (``constant``), or a cosine from 1 (first epoch) to 0.01 (last)."""
    if schedule == "constant" or epochs <= 1:
        return 1.0
    progress = min(max(epoch / (epochs - 1), 0.0), 1.0)
    return ALPHA_END + (1.0 - ALPHA_END) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- the terms, as small pure functions ---------------------------------------------------------------------------


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


def quality_focal_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """Elementwise BCEWithLogits(s, σ(t)) · |σ(s) − σ(t)|^β (PP-YOLOE's score distillation): 0 where s == t.

    The focal factor makes anchors where the student already agrees with the teacher (most background cells)
    cost almost nothing, so the dense sum over every anchor is not drowned by easy negatives.
    """
    s, t = student_logits.float(), teacher_logits.float()
    target = t.sigmoid()
    return F.binary_cross_entropy_with_logits(s, target, reduction="none") * (s.sigmoid() - target).abs().pow(beta)


def dfl_kl(student_bins: torch.Tensor, teacher_bins: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per anchor, the mean over the 4 box sides of KL(softmax(t/T) ‖ softmax(s/T)) · T².

    ``*_bins``: (..., 4 · reg_max) DFL logits in ultralytics' layout (side-major: 4 groups of reg_max bins).
    """
    shape = (*student_bins.shape[:-1], 4, student_bins.shape[-1] // 4)
    s = F.log_softmax(student_bins.float().view(shape) / temperature, dim=-1)
    t = F.log_softmax(teacher_bins.float().view(shape) / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)  # (..., 4)
    return kl.mean(-1) * temperature**2


def ciou_loss(student_boxes: torch.Tensor, teacher_boxes: torch.Tensor) -> torch.Tensor:
    """1 − CIoU for paired xyxy boxes (..., 4) -> (...)."""
    from ultralytics.utils.metrics import bbox_iou

    return 1.0 - bbox_iou(student_boxes.float(), teacher_boxes.float(), xywh=False, CIoU=True).squeeze(-1)


def head_geometry(model: nn.Module) -> tuple[list[float], int]:
    """(strides, reg_max) of a YOLO detection model's head."""
    head = model.model[-1]
    return [float(s) for s in head.stride], int(head.reg_max)


def check_dense_compatible(teacher: nn.Module, student: nn.Module, teacher_path: str = "the teacher") -> None:
    """`dense` compares anchor i of both models: refuse a teacher whose strides or DFL bins differ (exit 2)."""
    (ts, tr), (ss, sr) = head_geometry(teacher), head_geometry(student)
    if ts != ss or tr != sr:
        raise InputError(
            f"distill.method=dense needs a teacher whose head has the student's strides and DFL bins: {teacher_path} "
            f"has strides {ts} (reg_max {tr}), the student {ss} (reg_max {sr}); use a P3-P5 YOLOv8 teacher, or "
            "--set distill.method=pseudo, which matches the teacher's detections instead of its anchors"
        )


@torch.no_grad()
def teacher_forward(teacher: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The frozen teacher on the batch: (decoded (B, 4 + nc, A), raw head outputs: boxes (B, 4·reg_max, A),
    scores (B, nc, A) class logits, feats)."""
    decoded, raw = teacher(images)  # eval mode: ((B, 4 + nc, A) decoded, dict of raw outputs)
    return decoded, raw


def images_of(preds: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The training outputs (boxes, scores, feats) of the images ``index`` of the batch."""
    return {k: [f[index] for f in v] if k == "feats" else v[index] for k, v in preds.items()}


def labelled_targets(batch: dict, index: torch.Tensor) -> dict:
    """The batch's ground truth for its images ``index`` as a batch of those images alone (batch_idx renumbered);
    boxes of images outside ``index`` are left out."""
    position = torch.full((len(batch["labelled"]),), -1, dtype=torch.long, device=index.device)
    position[index] = torch.arange(len(index), device=index.device)
    image = position[batch["batch_idx"].long().to(index.device)]
    keep = image >= 0
    return {"batch_idx": image[keep].to(batch["batch_idx"].dtype), "cls": batch["cls"][keep],
            "bboxes": batch["bboxes"][keep]}  # fmt: skip


# --- the criteria --------------------------------------------------------------------------------------------------


class ResponseKDLoss:
    """ultralytics-compatible criterion: ``(preds, batch) -> (loss vector × batch size, loss items)``.

    Wraps the student's own v8DetectionLoss for the ground-truth term and appends the method's KD terms
    (``TERMS``), each × α · λ_distillation · its own λ. The trainer sums the vector; the items (detached, per
    image, unweighted) feed the progress bar, results.csv and the per-batch log. ``alpha`` is set by the trainer
    at each epoch start (``distill.schedule``).
    """

    TERMS: tuple[str, ...] = ()

    def __init__(self, student: nn.Module, teacher: nn.Module, settings: DistillSettings):
        self.detection = seam.detection_loss(student)
        self.teacher = teacher
        self.settings = settings
        self.alpha = 1.0
        self.last_teacher_detections: float | None = None  # per image, for the batch log (pseudo only)
        self.last_images: dict[str, int] | None = None  # a pooled batch's labelled and unlabelled image counts

    def __deepcopy__(self, memo):
        # ModelEMA and checkpoint snapshots deepcopy the student: they must not carry the teacher along.
        return None

    def __getstate__(self):
        raise TypeError(f"{type(self).__name__} holds the teacher and must never be pickled into a checkpoint")

    def term_weights(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """α · λ_distillation · λ_term for each of ``TERMS``: what multiplies each item in the loss vector."""
        s = self.settings
        weights = [self.alpha * s.lambda_distillation * getattr(s, TERM_WEIGHTS[k]) for k in self.TERMS]
        return torch.tensor(weights, device=device)

    def __call__(self, preds, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "labelled" in batch:  # a training batch that mixes labelled images and unlabelled pool frames
            return self.pooled(preds, batch, batch["labelled"])
        preds, det_loss, items = seam.ground_truth_loss(self.detection, preds, batch)  # det_loss: × batch size
        terms = self.kd_terms(preds, batch["img"])
        bs = batch["img"].shape[0]
        kd = torch.stack([terms[k] for k in self.TERMS]) * self.term_weights(det_loss.device) * bs
        loss = torch.cat([det_loss * self.settings.lambda_detection, kd.to(det_loss.dtype)])
        return loss, {**items, **{k: terms[k].detach() for k in self.TERMS}}

    def pooled(self, preds, batch: dict, labelled: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A batch of labelled images and unlabelled frames (``labelled``: one flag per image). The ground-truth
        loss sees the labelled images only, as if they were the whole batch: an unlabelled frame has no boxes, and
        the ground truth would teach "background" wherever its smoke is. The KD terms see both, each kind apart: the
        labelled images' terms as without a pool, the frames' (items ``<term>_u``) × ``distill.unlabeled_weight``.
        Each is × its image count, as the ground truth's vector is × batch size: every image weighs the same."""
        parsed = self.detection.parse_output(preds)
        decoded, raw = self.run_teacher(batch["img"])
        groups = {"": labelled.nonzero().flatten(), UNLABELED_SUFFIX: (~labelled).nonzero().flatten()}
        self.last_images = {"labelled": len(groups[""]), "unlabelled": len(groups[UNLABELED_SUFFIX])}
        det_loss = parsed["scores"].sum() * 0 + torch.zeros(3, device=batch["img"].device)  # stays in the graph
        items = dict.fromkeys(seam.loss_names(self.detection), torch.zeros((), device=det_loss.device))
        if len(groups[""]):
            det_loss, items = self.detection.loss(images_of(parsed, groups[""]), labelled_targets(batch, groups[""]))
        weights, parts, detections = self.term_weights(det_loss.device), [det_loss * self.settings.lambda_detection], 0
        for suffix, index in groups.items():
            terms = dict.fromkeys(self.TERMS, torch.zeros((), device=det_loss.device))
            if len(index):
                teacher = (decoded[index], {k: v[index] for k, v in raw.items() if k != "feats"})
                terms = self.terms(images_of(parsed, index), *teacher, unlabelled=bool(suffix))
                detections += (self.last_teacher_detections or 0.0) * len(index)
            weight = len(index) * (self.settings.unlabeled_weight if suffix else 1.0)
            parts.append((torch.stack([terms[k] for k in self.TERMS]) * weights * weight).to(det_loss.dtype))
            items |= {f"{k}{suffix}": terms[k].detach() for k in self.TERMS}
        if self.last_teacher_detections is not None:
            self.last_teacher_detections = detections / max(len(labelled), 1)
        return torch.cat(parts), items

    def kd_terms(self, preds: dict, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each of ``TERMS`` (unweighted) for a batch: the teacher's forward pass, then :meth:`terms`."""
        return self.terms(preds, *self.run_teacher(images))

    def terms(
        self, preds: dict, decoded: torch.Tensor, raw: dict[str, torch.Tensor], unlabelled: bool = False
    ) -> dict[str, torch.Tensor]:
        """The KD terms from the student's raw outputs and the teacher's (decoded, raw) outputs; ``unlabelled``:
        the images are pool frames, which have no ground-truth assignment."""
        raise NotImplementedError

    def run_teacher(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The teacher on the student's batch, under the student's autocast (fp16 validation batches included)."""
        teacher_dtype = next(self.teacher.parameters()).dtype
        if images.dtype != teacher_dtype:  # fp16 validation batches: run the fp32 teacher under autocast
            with torch.autocast(images.device.type, dtype=images.dtype, enabled=images.device.type == "cuda"):
                return teacher_forward(self.teacher, images.to(teacher_dtype))
        return teacher_forward(self.teacher, images)

    def anchors(self, preds: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(anchor points in grid units (A, 2), stride per anchor (A, 1)) of the student's feature maps."""
        from ultralytics.utils.tal import make_anchors

        return make_anchors(preds["feats"], self.detection.stride, 0.5)


class DenseKDLoss(ResponseKDLoss):
    """`dense`: class scores, DFL distributions and (optionally) boxes distilled at every anchor."""

    TERMS = ("kd_cls", "kd_ld", "kd_box")

    def __init__(self, student: nn.Module, teacher: nn.Module, settings: DistillSettings):
        super().__init__(student, teacher, settings)
        check_dense_compatible(teacher, student)
        self.cls_normaliser: torch.Tensor | float = 1.0
        self.normaliser_per_image: torch.Tensor | None = None  # its running mean per labelled image (pool frames)
        # the ground-truth loss assigns anchors to boxes first on each batch: read the normaliser off that
        seam.on_ground_truth_assignment(self.detection, self._record_cls_normaliser)

    def _record_cls_normaliser(self, target_scores: torch.Tensor, fg_mask: torch.Tensor) -> None:
        counted = fg_mask if self.settings.cls_normaliser == "foreground" else target_scores
        self.cls_normaliser = counted.detach().float().sum().clamp(min=1)
        per_image = self.cls_normaliser / max(fg_mask.shape[0], 1)
        previous = self.normaliser_per_image
        self.normaliser_per_image = per_image if previous is None else previous.lerp(per_image, 1 - NORMALISER_MOMENTUM)

    def unlabelled_normaliser(self, images: int) -> torch.Tensor | float:
        """The class term's divisor for ``images`` unlabelled frames, which have no ground-truth assignment: the
        labelled images' divisor per image (a running mean over batches) × ``images``, so a frame's class term is on
        a labelled image's scale; before any labelled batch, the assigner's top-k anchors per image."""
        per_image = self.normaliser_per_image
        per_image = float(self.detection.assigner.topk) if per_image is None else per_image
        return (per_image * images).clamp(min=1) if torch.is_tensor(per_image) else max(per_image * images, 1.0)

    def terms(
        self, preds: dict, decoded: torch.Tensor, raw: dict[str, torch.Tensor], unlabelled: bool = False
    ) -> dict[str, torch.Tensor]:
        s_cls, t_cls = preds["scores"].permute(0, 2, 1), raw["scores"].permute(0, 2, 1)  # (B, A, nc) logits
        s_bins, t_bins = preds["boxes"].permute(0, 2, 1), raw["boxes"].permute(0, 2, 1)  # (B, A, 4·reg_max)
        if s_cls.shape != t_cls.shape or s_bins.shape != t_bins.shape:
            raise InputError(
                f"distill.method=dense: the teacher gives {tuple(t_bins.shape[:2])} anchors and the student "
                f"{tuple(s_bins.shape[:2])} on the same batch; use --set distill.method=pseudo"
            )
        s = self.settings
        # the ground-truth loss ran just before on this batch and recorded its normaliser
        normaliser = self.unlabelled_normaliser(s_cls.shape[0]) if unlabelled else self.cls_normaliser
        kd_cls = quality_focal_kd(s_cls, t_cls, s.cls_beta).sum() / normaliser
        weight = t_cls.float().sigmoid().amax(-1)  # (B, A): how sure the teacher is that anything is there
        weight_sum = weight.sum().clamp(min=1e-9)
        kd_ld = (dfl_kl(s_bins, t_bins, s.ld_temperature) * weight).sum() / weight_sum
        if s.box_weight > 0:
            anchor_points, stride = self.anchors(preds)
            decode = self.detection.bbox_decode
            s_box = decode(anchor_points, s_bins.float()) * stride
            t_box = decode(anchor_points, t_bins.float()) * stride
            kd_box = (ciou_loss(s_box, t_box) * weight).sum() / weight_sum
        else:  # off by default: skip the decode, keep the column
            kd_box = torch.zeros((), device=s_cls.device)
        return {"kd_cls": kd_cls, "kd_ld": kd_ld, "kd_box": kd_box}


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


@dataclass
class Match:
    """Student anchors assigned to teacher boxes by the task-aligned assigner."""

    fg_mask: torch.Tensor  # (B, A) matched anchors
    target_bboxes: torch.Tensor  # (B, A, 4) matched teacher box, xyxy pixels
    target_gt_idx: torch.Tensor  # (B, A) index of the matched teacher box
    weight: torch.Tensor  # (F,) teacher confidence x assignment quality, per matched anchor


class PseudoTargetKDLoss(ResponseKDLoss):
    """`pseudo`: the teacher's NMS-kept detections as pseudo-targets, matched to student anchors."""

    TERMS = ("kd_box", "kd_cls")

    def __init__(self, student: nn.Module, teacher: nn.Module, settings: DistillSettings):
        from ultralytics.utils.tal import TaskAlignedAssigner

        super().__init__(student, teacher, settings)
        self.assigner = TaskAlignedAssigner(
            topk=settings.topk,
            num_classes=self.detection.nc,
            alpha=0.5,
            beta=6.0,
            stride=self.detection.stride.tolist(),
        )
        self.last_teacher_detections = 0.0
        self._grid_warned = False

    def student_outputs(self, preds: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class logits (B, A, nc), decoded boxes xyxy pixels (B, A, 4), anchor points, strides) of the student."""
        pred_distri = preds["boxes"].permute(0, 2, 1).contiguous()
        pred_logits = preds["scores"].permute(0, 2, 1).contiguous()
        anchor_points, stride_tensor = self.anchors(preds)
        pred_bboxes = self.detection.bbox_decode(anchor_points, pred_distri) * stride_tensor
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

    def terms(
        self, preds: dict, decoded: torch.Tensor, raw: dict[str, torch.Tensor], unlabelled: bool = False
    ) -> dict[str, torch.Tensor]:
        """kd_box and kd_cls: both exactly 0 when the teacher keeps no detection (label-free: the same on frames)."""
        zero = torch.zeros((), device=decoded.device)
        targets = pseudo_targets(decoded, raw["scores"], self.settings)
        self.last_teacher_detections = targets.count / decoded.shape[0]
        if targets.count == 0:
            return {"kd_box": zero, "kd_cls": zero}
        pred_logits, pred_bboxes, anchor_points, stride_tensor = self.student_outputs(preds)
        match = self.match(pred_logits, pred_bboxes, anchor_points, stride_tensor, targets)
        if not match.fg_mask.any():
            return {"kd_box": zero, "kd_cls": zero}
        kd_box, kd_cls = self.losses(pred_logits, pred_bboxes, targets, match)
        return {"kd_box": kd_box, "kd_cls": kd_cls}


CRITERIA: dict[str, type[ResponseKDLoss]] = {"dense": DenseKDLoss, "pseudo": PseudoTargetKDLoss}


def make_criterion(student: nn.Module, teacher: nn.Module, settings: DistillSettings) -> ResponseKDLoss:
    """The KD criterion of ``settings.method`` for this student and teacher."""
    return CRITERIA[settings.method](student, teacher, settings)
