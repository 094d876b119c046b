"""The figures a camera network judges a detector by, at its operating point: false alarms on smoke-free frames,
and recall by object size (a small, distant plume is when an alarm is worth most).

Pure functions over normalised boxes, so they are checked on hand-made boxes; `validate` feeds them the
predictions of both models at the student's operating point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .boxes import box_iou

BUCKETS = ("small", "medium", "large")

# (class id, x1, y1, x2, y2 normalised to 0..1)
Box = tuple[int, float, float, float, float]


@dataclass
class CameraFigures:
    conf: float  # the confidence threshold the figures are taken at
    negative_frames: int  # smoke-free frames scored (the split's unlabelled images + validation.negatives)
    false_alarm_frames: int  # of those, frames with at least one detection
    false_alarms_per_1000: float | None  # None without smoke-free frames
    recall_by_size: dict[str, dict[str, Any]] = field(default_factory=dict)  # bucket -> objects, found, recall
    unreadable: list[str] = field(default_factory=list)  # frames that could not be read (reported, not dropped)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def size_bucket(box: Box, small: float, large: float) -> str:
    """small: area < ``small`` of the image; large: area >= ``large``; medium between."""
    area = (box[3] - box[1]) * (box[4] - box[2])
    return "small" if area < small else "large" if area >= large else "medium"


def is_found(obj: Box, predictions: list[Box], iou: float = 0.5) -> bool:
    """Whether a prediction of ``obj``'s class overlaps it with IoU >= ``iou``."""
    same = np.array([p[1:] for p in predictions if p[0] == obj[0]], dtype=np.float64).reshape(-1, 4)
    return bool(len(same) and (box_iou(np.array([obj[1:]]), same) >= iou).any())


def camera_figures(
    predictions: dict[str, list[Box]],
    truths: dict[str, list[Box]],
    negatives: set[str],
    conf: float,
    small: float,
    large: float,
    iou: float = 0.5,
    unreadable: list[str] | None = None,
) -> CameraFigures:
    """Frames are keys of ``predictions``; ``negatives`` are the smoke-free ones. An object counts as found when a
    prediction of its class overlaps it with IoU >= ``iou``; a smoke-free frame with any prediction is a false
    alarm (a camera raises one alarm per frame, however many boxes)."""
    alarms = sum(1 for frame in negatives if predictions.get(frame))
    counts = {b: {"objects": 0, "found": 0} for b in BUCKETS}
    for frame, objects in truths.items():
        found_boxes = predictions.get(frame, [])
        for obj in objects:
            bucket = counts[size_bucket(obj, small, large)]
            bucket["objects"] += 1
            bucket["found"] += is_found(obj, found_boxes, iou)
    for bucket in counts.values():
        bucket["recall"] = bucket["found"] / bucket["objects"] if bucket["objects"] else None
    return CameraFigures(
        conf=conf,
        negative_frames=len(negatives),
        false_alarm_frames=alarms,
        false_alarms_per_1000=1000 * alarms / len(negatives) if negatives else None,
        recall_by_size=counts,
        unreadable=list(unreadable or []),
    )
