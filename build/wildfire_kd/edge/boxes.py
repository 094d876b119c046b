"""Boxes in numpy and OpenCV: IoU, NMS, and the decoding of the model's output into detections.

What ultralytics' predictor does after the network, written so a camera needs neither torch nor ultralytics:
the same thresholds, the same class offset, the same order of kept boxes (tested against both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_CONF = 0.25  # without an operating point in the file (ultralytics' predict default)
DEFAULT_IOU = 0.7  # NMS IoU (ultralytics' predict default)
MAX_DET = 300  # detections per frame at most
MAX_NMS = 30_000  # candidates into NMS at most
CLASS_OFFSET = 7680  # px added per class id so NMS never compares boxes of different classes (ultralytics' max_wh)


@dataclass(frozen=True)
class Detection:
    class_id: int
    name: str
    confidence: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the frame's pixels

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "box": [round(v, 2) for v in self.box], "confidence": round(self.confidence, 5)}

    def state(self) -> list:
        """Exactly this detection, compactly (a camera's saved state: restored, it gives the same alarms)."""
        return [self.class_id, self.name, self.confidence, list(self.box)]

    @classmethod
    def from_state(cls, raw: list) -> Detection:
        class_id, name, confidence, box = raw
        return cls(int(class_id), str(name), float(confidence), tuple(float(v) for v in box))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy -> (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS, highest score first, dropping boxes with IoU > threshold: kept indices in score order.

    OpenCV's C++ NMSBoxes does the suppression (a loop in numpy took 8x longer on the hundreds of candidates a
    confused frame produces). It orders equal scores its own way, so boxes go in already sorted (stable, as
    torchvision.ops.nms orders them) with strictly decreasing ranks for scores: the kept boxes are then
    torchvision's, ties included (tested).
    """
    import cv2

    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    ranked = boxes[order]
    rects = np.concatenate([ranked[:, :2], ranked[:, 2:] - ranked[:, :2]], axis=1)  # x, y, w, h
    ranks = np.arange(len(order), 0, -1, dtype=np.float32)  # exact in float32 up to 2**24 candidates
    kept = cv2.dnn.NMSBoxes(rects, ranks, 0.0, iou_threshold)
    return order[np.asarray(kept, dtype=np.int64).reshape(-1)]


def decode(output: np.ndarray, conf: float, iou: float, max_det: int = MAX_DET) -> tuple[np.ndarray, ...]:
    """One frame's output (4 + nc, anchors): cx, cy, w, h then per-class scores -> (xyxy, scores, class ids),
    best class per anchor above ``conf``, class-aware NMS, highest scores first (ultralytics' non_max_suppression)."""
    scores_all = output[4:].T  # (anchors, nc)
    class_ids = scores_all.argmax(1)
    scores = scores_all[np.arange(len(class_ids)), class_ids]
    keep = scores > conf
    cxcywh, scores, class_ids = output[:4].T[keep], scores[keep], class_ids[keep]
    if len(scores) > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        cxcywh, scores, class_ids = cxcywh[top], scores[top], class_ids[top]
    xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
    kept = nms(xyxy + class_ids[:, None] * CLASS_OFFSET, scores, iou)[:max_det]
    return xyxy[kept], scores[kept], class_ids[kept]
