"""Accuracy, cost, the operating point and teacher agreement of one model on the split, through ultralytics'
own validator with identical settings for teacher and student."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ValidateSettings
from ..weights import CheckedWeights
from .result import ModelFigures


def latency(model, imgsz: int, device, warmup: int, runs: int) -> tuple[float, float]:
    """(median, p90) milliseconds of a batch-1 forward pass of ``model`` on ``device``."""
    import torch

    x = torch.zeros(1, 3, imgsz, imgsz, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]


def accuracy(yolo, data: str, settings: ValidateSettings, imgsz: int, device: str, workdir: Path, name: str):
    """ultralytics' validator on ``yolo`` (a loaded YOLO); returns its DetMetrics. It fuses the model in place."""
    return yolo.val(
        data=data,
        split=settings.split,
        imgsz=imgsz,
        batch=settings.batch,
        conf=settings.conf,
        iou=settings.iou,
        device=device or None,
        plots=False,
        verbose=False,
        project=str(workdir),
        name=name,
        exist_ok=True,
    )


def cost(model, imgsz: int) -> tuple[int, float]:
    """(parameters, GFLOPs at ``imgsz``) of the model as trained, before Conv+BN fusing."""
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    return int(get_num_params(model)), round(float(get_flops(model, imgsz)), 3)


def _per_class(metrics, names: list[str]) -> dict[str, dict[str, float | int | None]]:
    box = metrics.box
    per_class: dict[str, dict[str, float | int | None]] = {}
    scored = {int(c): i for i, c in enumerate(box.ap_class_index)}
    for c, name in enumerate(names):
        instances = int(metrics.nt_per_class[c]) if c < len(metrics.nt_per_class) else 0
        if c in scored:
            p, r, ap50, ap = (float(v) for v in box.class_result(scored[c]))
            per_class[name] = {"precision": p, "recall": r, "map50": ap50, "map50_95": ap, "instances": instances}
        else:  # no labels of this class in the split: nothing to score
            per_class[name] = {"precision": None, "recall": None, "map50": None, "map50_95": None, "instances": 0}
    return per_class


def figures(
    weights: CheckedWeights, model, metrics, names: list[str], settings: ValidateSettings, imgsz: int, device, size
) -> ModelFigures:
    """Accuracy (``metrics``), cost (``size``: parameters and GFLOPs from :func:`cost`) and latency of the fused
    model, as it runs in deployment."""
    fused = model.fuse(verbose=False).to(device).eval()  # Conv+BN folded
    median, p90 = latency(fused, imgsz, device, settings.latency_warmup, settings.latency_runs)
    box = metrics.box
    return ModelFigures(
        weights=str(weights.path),
        sha256=weights.sha256,
        size_mb=round(Path(weights.path).stat().st_size / 2**20, 3),
        parameters=size[0],
        gflops=size[1],
        latency_ms=round(median, 3),
        latency_p90_ms=round(p90, 3),
        precision=float(box.mp),
        recall=float(box.mr),
        map50=float(box.map50),
        map50_95=float(box.map),
        per_class=_per_class(metrics, names),
    )


def _curves_at(box, i: int) -> dict[str, float]:
    """Mean-over-classes precision, recall and F1 of ultralytics' per-confidence curves at grid index ``i``."""
    return {k: round(float(getattr(box, f"{k}_curve").mean(0)[i]), 4) for k in ("p", "r", "f1")}


def operating_point(student_box, teacher_box, settings: ValidateSettings) -> dict[str, Any] | None:
    """The student's confidence threshold on this split, with both models' precision / recall there.

    Max F1 takes the index ultralytics itself reports its precision and recall at (smoothed mean F1); with
    ``target_precision``, the lowest confidence whose mean precision reaches it. None: no labelled class.
    """
    from ultralytics.utils.metrics import smooth

    if not len(student_box.f1_curve):
        return None
    if settings.target_precision is None:
        i, rule = int(smooth(student_box.f1_curve.mean(0), 0.1).argmax()), "max_f1"
        if student_box.f1_curve.mean(0)[i] <= 0:  # an all-zero F1 curve would ship confidence 0
            return {
                "conf": None,
                "rule": rule,
                "unreachable": "the student finds no labelled object at any confidence on this split",
            }
    else:
        reached = np.flatnonzero(student_box.p_curve.mean(0) >= settings.target_precision)
        if not len(reached):
            return {
                "conf": None,
                "rule": f"precision>={settings.target_precision}",
                "unreachable": "the student's precision never reaches the target on this split",
            }
        i, rule = int(reached[0]), f"precision>={settings.target_precision}"
    point = {"conf": round(float(student_box.px[i]), 4), "rule": rule, "student": _curves_at(student_box, i)}
    point["teacher"] = _curves_at(teacher_box, i) if len(teacher_box.f1_curve) else None
    return point


def teacher_agreement(
    student_model, teacher_model, data: str, settings: ValidateSettings, imgsz: int, device: str, workdir: Path
) -> float | None:
    """Student mAP50 when the teacher's own predictions (conf >= agreement_conf) are the ground truth.

    Scored inside ultralytics' validator on the very tensors the student sees: each batch's labels are
    replaced by the teacher's NMS output on that batch, so letterboxing and padding cannot differ. None when
    the teacher predicts nothing at that confidence: with no ground truth the score is undefined, not 0.
    """
    import torch
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import xyxy2xywh

    from ..seam import relabelling_validator

    counted = {"teacher_boxes": 0}

    def teacher_labels(img: torch.Tensor, max_det: int):
        model = teacher_model.to(img.device)
        with torch.inference_mode():
            decoded = model(img.to(next(model.parameters()).dtype))[0]
        kept = non_max_suppression(decoded, conf_thres=settings.agreement_conf, iou_thres=settings.iou, max_det=max_det)
        counted["teacher_boxes"] += sum(len(d) for d in kept)
        h, w = img.shape[2:]
        scale = torch.tensor([w, h, w, h], device=img.device, dtype=torch.float32)
        batch_idx = torch.cat([torch.full((len(d),), i, device=img.device) for i, d in enumerate(kept)])
        return batch_idx, torch.cat([d[:, 5:6] for d in kept]), torch.cat([xyxy2xywh(d[:, :4]) / scale for d in kept])

    args = {
        "data": data,
        "split": settings.split,
        "imgsz": imgsz,
        "batch": settings.batch,
        "conf": settings.conf,
        "iou": settings.iou,
        "device": device or None,
        "plots": False,
        "verbose": False,
        "rect": True,
        "project": str(workdir),
        "name": "agreement",
        "exist_ok": True,
        "mode": "val",
    }
    validator = relabelling_validator(teacher_labels)(args=args)
    validator(model=student_model)
    return float(validator.metrics.box.map50) if counted["teacher_boxes"] else None
