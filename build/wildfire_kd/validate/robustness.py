"""Recall under what camera pipelines do to frames: JPEG re-compression, a downscale and back, brightness and
contrast shifts. Both models at the student's operating point on the split's labelled images; each figure is the
recall of the labelled objects (same class, IoU >= 0.5) and its retention, perturbed over clean. A student that holds
its recall only on pristine frames is what made Pyronear replace a model ("way too sensitive" to JPEG and resizing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..data import DatasetInfo
from ..edge.figures import Box, is_found
from .camera_figures import ground_truth, predicted_boxes
from .result import ratio, worst_retention


def _jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def perturb(image: np.ndarray) -> np.ndarray:
        import cv2

        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)

    return perturb


def _rescale(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    def perturb(image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)

    return perturb


def _tone(gain: float, offset: float) -> Callable[[np.ndarray], np.ndarray]:
    def perturb(image: np.ndarray) -> np.ndarray:
        mean = image.mean()
        return np.clip((image.astype(np.float32) - mean) * gain + mean + offset, 0, 255).astype(np.uint8)

    return perturb


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg_q30": _jpeg(30),
    "jpeg_q60": _jpeg(60),
    "jpeg_q90": _jpeg(90),
    "downscale_x0.5": _rescale(0.5),
    "downscale_x0.25": _rescale(0.25),
    "brighter_+40": _tone(1.0, 40),
    "darker_-40": _tone(1.0, -40),
    "contrast_x0.6": _tone(0.6, 0),
}


def _recall(yolo, images: dict[str, np.ndarray], truths: dict[str, list[Box]], conf: float, imgsz: int, device):
    found = total = 0
    for name, image in images.items():
        predicted = predicted_boxes(yolo, image, imgsz, conf, device)
        total += len(truths[name])
        found += sum(is_found(obj, predicted) for obj in truths[name])
    return found / total if total else None


def robustness(yolos: dict[str, Any], info: DatasetInfo, split: str, conf: float, imgsz: int, device: str) -> dict:
    """validation.json's ``robustness``: clean recall, and per perturbation each model's recall and retention."""
    import cv2

    truths = {name: objects for name, objects in ground_truth(info.usable(split)).items() if objects}
    clean = {name: cv2.imread(name) for name in truths}
    report: dict[str, Any] = {
        "conf": conf,
        "objects": sum(len(v) for v in truths.values()),
        "clean": {},
        "perturbed": {},
    }
    for role in ("student", "teacher"):
        report["clean"][role] = _recall(yolos[role], clean, truths, conf, imgsz, device)
    for name, perturb in PERTURBATIONS.items():
        images = {k: perturb(v) for k, v in clean.items()}
        row = {}
        for role in ("student", "teacher"):
            recall = _recall(yolos[role], images, truths, conf, imgsz, device)
            row[role] = {"recall": recall, "retention": ratio(recall, report["clean"][role])}
        report["perturbed"][name] = row
    report["worst_student_retention"] = worst_retention(report, "student")
    return report
