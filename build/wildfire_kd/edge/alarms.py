"""Alarms from one camera's frames in time order: a detection must recur before it alarms.

Single frames of haze, cloud and glare make most false alarms, so `Confirmer` raises an alarm only when a detection
recurs in k of the last n frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .boxes import box_iou
from .model import Detection

ALARM_K, ALARM_N, ALARM_IOU = 3, 5, 0.3  # an alarm: same-class overlap (IoU >= 0.3) in 3 of the last 5 frames


@dataclass
class Alarm:
    frame: str
    detection: Detection
    confirmed_by: list[str]  # the frames (this one included) with an overlapping detection of the same class

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, **self.detection.to_dict(), "confirmed_by": self.confirmed_by}


@dataclass
class Confirmer:
    """Temporal confirmation for one camera's frames in time order.

    A detection raises an alarm when detections of its class overlap it (IoU >= ``iou``) in at least ``k`` of the
    last ``n`` frames, this one included. An object already alarmed does not alarm again while it stays confirmed.
    Higher k or n: fewer false alarms from transient haze, glare or clouds, but a later first alarm.
    """

    k: int = ALARM_K
    n: int = ALARM_N
    iou: float = ALARM_IOU
    _window: deque = field(init=False, repr=False)
    _active: list[Detection] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise InputError(f"temporal confirmation needs 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 0.0 < self.iou <= 1.0:  # NaN fails this too
            raise InputError(f"alarm IoU {self.iou}: the overlap that makes two detections one object is in (0, 1]")
        self._window = deque(maxlen=self.n)

    def _overlaps(self, d: Detection, others: list[Detection]) -> bool:
        same = [o.box for o in others if o.class_id == d.class_id]
        return bool(same) and bool((box_iou(np.array([d.box]), np.array(same)) >= self.iou).any())

    def update(self, frame: str, detections: list[Detection]) -> list[Alarm]:
        """Add the next frame; returns the alarms it raises."""
        self._window.append((frame, detections))
        alarms, confirmed = [], []
        for d in detections:
            support = [name for name, dets in self._window if self._overlaps(d, dets)]
            if len(support) < self.k:
                continue
            confirmed.append(d)
            if not self._overlaps(d, self._active):
                alarms.append(Alarm(frame, d, support))
        self._active = confirmed
        return alarms
