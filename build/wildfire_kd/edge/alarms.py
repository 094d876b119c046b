"""Alarms from one camera's frames in time order: a detection must recur before it alarms.

Single frames of haze, cloud and glare make most false alarms, so an alarm needs support over the last ``n`` frames
from detections of the same class that overlap it (IoU >= ``iou``), each at or above the per-frame ``floor``:

- ``count``: detections in at least ``k`` of the last ``n`` frames (this one included);
- ``score``: their confidences summed over the last ``n`` frames (the best overlapping box of each frame) reach
  ``threshold``, as Pyronear's engine combines frames (a low floor, so a faint plume seen often adds up).

An object alarms once: its alarm stays on while its support stays at or above ``release`` times the level that
raised it (hysteresis: a plume that flickers under the trigger does not alarm again), and ends below that.
`AlarmRule` travels in the model file's metadata (``wildfire_kd.alarm``, chosen by `validate` on sequences).
Without one, a camera uses ``DEFAULT_RULE``: summed confidence >= 1.25 over the last 5 frames (a mean of 0.25), floor
0.1, held down to half of it. On synthetic tower-camera sequences (BENCHMARKS.md, two detectors, four resolution
settings) it found every fire that 3-of-5 counting found, with fewer false alarms per camera-day in 7 of the 8
comparisons (the same in the 8th) and the same or a shorter delay in 7 (one minute longer in the 8th).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import InputError
from .boxes import Detection, box_iou

ALARM_K, ALARM_N, ALARM_IOU = 3, 5, 0.3  # a count rule's defaults: same-class overlap (IoU >= 0.3), 3 of 5 frames


@dataclass(frozen=True)
class AlarmRule:
    """When detections in one camera's recent frames make an alarm (see the module's doc)."""

    mode: str = "count"  # "count" (k of the last n frames) or "score" (summed confidence over the last n frames)
    n: int = ALARM_N
    k: int = ALARM_K  # count: frames with support
    threshold: float = 1.0  # score: summed best confidence of the overlapping boxes over the window
    floor: float | None = None  # per-frame confidence floor; None: the detector's own threshold
    iou: float = ALARM_IOU  # overlap that makes two detections one object
    release: float = 1.0  # an ongoing alarm ends when its support falls below release x the trigger level

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in ("count", "score"):
            problems.append(f"mode {self.mode!r}: 'count' or 'score'")
        if not (isinstance(self.n, int) and self.n >= 1):
            problems.append(f"n {self.n}: at least 1 frame")
        elif self.mode == "count" and not 1 <= self.k <= self.n:
            problems.append(f"temporal confirmation needs 1 <= k <= n, got k={self.k}, n={self.n}")
        if self.mode == "score" and not (math.isfinite(self.threshold) and self.threshold > 0):
            problems.append(f"threshold {self.threshold}: a positive summed confidence")
        if self.floor is not None and not 0.0 <= self.floor <= 1.0:
            problems.append(f"floor {self.floor}: a confidence between 0 and 1")
        if not 0.0 < self.iou <= 1.0:  # NaN fails this too
            problems.append(f"alarm IoU {self.iou}: the overlap that makes two detections one object is in (0, 1]")
        if not 0.0 < self.release <= 1.0:
            problems.append(f"release {self.release}: a fraction of the trigger level in (0, 1]")
        if problems:
            raise InputError("alarm rule: " + "; ".join(problems))

    @property
    def trigger(self) -> float:
        """The support that raises an alarm: k frames, or the summed confidence."""
        return float(self.k) if self.mode == "count" else self.threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: object = "the alarm rule") -> AlarmRule:
        """A rule as `to_dict` wrote it (a model file's metadata): unknown keys or bad values are bad input."""
        known = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) - known:
            raise InputError(f"{source}: not an alarm rule ({raw!r}); export the model again")
        return cls(**raw)

    def describe(self) -> str:
        floor = f", floor {self.floor:g}" if self.floor is not None else ""
        hold = f", held down to {self.release:g} of it" if self.release < 1 else ""
        if self.mode == "count":
            return f"{self.k} of the last {self.n} frames{floor}{hold}"
        return f"summed confidence >= {self.threshold:g} over the last {self.n} frames{floor}{hold}"


DEFAULT_RULE = AlarmRule("score", n=5, threshold=1.25, floor=0.1, release=0.5)  # when the model ships none


def rule_with(base: AlarmRule | None, overrides: dict[str, Any] | None) -> AlarmRule:
    """``base`` (the model's rule, else DEFAULT_RULE) with the fields the user set. The mode is the one named, else
    the one its fields imply (k: count, threshold: score); a user who picks another mode than the base's starts from
    that mode's own defaults, not from the other mode's floor and hysteresis."""
    base, overrides = base or DEFAULT_RULE, dict(overrides or {})
    implied = "count" if "k" in overrides else "score" if "threshold" in overrides else base.mode
    overrides["mode"] = overrides.get("mode") or implied
    if overrides["mode"] != base.mode:
        return AlarmRule(**overrides)
    return AlarmRule(**{**base.to_dict(), **overrides})


def overrides_of(settings: object, prefix: str = "alarm_") -> dict[str, Any]:
    """The AlarmRule fields ``settings`` sets as ``<prefix><field>`` attributes (the edge CLI's arguments, detect's
    config section); those left None are not set."""
    given = {f.name: getattr(settings, prefix + f.name) for f in fields(AlarmRule)}
    return {name: value for name, value in given.items() if value is not None}


@dataclass
class Alarm:
    frame: str
    detection: Detection
    confirmed_by: list[str]  # the frames (this one included) with an overlapping detection of the same class

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, **self.detection.to_dict(), "confirmed_by": self.confirmed_by}


@dataclass
class Confirmer:
    """Temporal confirmation of one camera's frames in time order, under ``rule``."""

    rule: AlarmRule = field(default_factory=lambda: DEFAULT_RULE)
    _window: deque = field(init=False, repr=False)
    _active: list[Detection] = field(default_factory=list, init=False, repr=False)  # ongoing alarms' latest boxes

    def __post_init__(self) -> None:
        self._window = deque(maxlen=self.rule.n)

    def _support(self, d: Detection) -> tuple[float, list[str]]:
        """(support of ``d`` over the window under the rule, the frames that gave it)."""
        frames, total = [], 0.0
        for name, dets in self._window:
            same = [o for o in dets if o.class_id == d.class_id]
            if not same:
                continue
            overlap = box_iou(np.array([d.box]), np.array([o.box for o in same]))[0] >= self.rule.iou
            if overlap.any():
                frames.append(name)
                best = max(o.confidence for o, hit in zip(same, overlap, strict=True) if hit)
                total += 1.0 if self.rule.mode == "count" else best
        return total, frames

    def _follows(self, a: Detection, d: Detection) -> bool:
        return a.class_id == d.class_id and float(box_iou(np.array([a.box]), np.array([d.box]))[0, 0]) >= self.rule.iou

    def state(self) -> dict[str, Any]:
        """The window and the ongoing alarms, to save (a restarted camera neither re-alarms a held plume nor forgets
        one that was building)."""
        window = [[name, [d.state() for d in dets]] for name, dets in self._window]
        return {"window": window, "active": [d.state() for d in self._active]}

    def restore(self, state: dict[str, Any]) -> None:
        self._window.clear()
        for name, dets in state.get("window", [])[-self.rule.n :]:
            self._window.append((name, [Detection.from_state(d) for d in dets]))
        self._active = [Detection.from_state(d) for d in state.get("active", [])]

    @property
    def held(self) -> list[Detection]:
        """The objects whose alarm is still on (hysteresis), where each was last seen."""
        return list(self._active)

    def update(self, frame: str, detections: list[Detection]) -> list[Alarm]:
        """Add the next frame; returns the alarms it raises."""
        floor = self.rule.floor
        kept = [d for d in detections if floor is None or d.confidence >= floor]
        self._window.append((frame, kept))
        hold = self.rule.release * self.rule.trigger
        active = [a for a in self._active if self._support(a)[0] >= hold]
        alarms = []
        for d in kept:
            support, frames = self._support(d)
            ongoing = next((i for i, a in enumerate(active) if self._follows(a, d)), None)
            if ongoing is not None:
                active[ongoing] = d  # the same object, where it is now
            elif support >= self.rule.trigger:
                alarms.append(Alarm(frame, d, frames))
                active.append(d)
        self._active = active
        return alarms
