"""A camera's memory of detections that stay put: a lens vignette, a reflection on the housing, a bright rock face.

A real plume grows and drifts within minutes; an artefact of the view sits at the same place, the same size, frame
after frame. Each detection the alarm logic would see is matched to a *spot* of the camera's memory (same class, IoU
with the spot's reference box >= ``iou``). A spot seen at least ``sightings`` times over at least ``minutes`` without
its box growing by more than ``growth`` (in area, against the reference) becomes *static*: its detections are
suppressed before the alarm logic, each with the reason. A detection at a static spot whose box has grown past
``growth`` releases the spot (a fire grows): it reaches the alarm logic and the spot is learnt again from it; one that
drifts off the spot matches it no more, and is not suppressed.

What it would take to suppress a real fire: a smoulder detected at one place for ``minutes`` whose box never grows by
``growth``. Such a fire alarms before it is learnt (the alarm rule needs a few frames; the memory needs ``minutes``),
and its later growth releases it. The guards: growth and drift release a spot at once; a spot learnt online stays
static for ``max_hours`` at a time: then, if it was not seen in the last ``minutes``, it is dropped and must be learnt
again (alarming once more if the alarm rule calls it); if it is still there, unchanged against the box it was learnt
from, it is renewed for another ``max_hours`` (dropping a spot that never left would raise one false alarm per
artefact per day, the whole budget of a camera-day). A spot not seen for ``forget_hours`` is forgotten. Spots seeded
from a folder of the camera's smoke-free frames (``learn``) are static from the start.

The memory is learnt online from the frames themselves and kept per camera (``to_dict`` / ``from_dict``: detect
writes it to OUT/static_memory.json and reads one back with ``--static-memory``; the service keeps it in its state).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import InputError
from .boxes import Detection, box_iou

MAX_SPOTS = 200  # per camera: the least recently seen are forgotten first


@dataclass(frozen=True)
class StaticRule:
    """When a detection that stays put is suppressed (see the module's doc)."""

    minutes: float = 10.0  # seen unchanged at least this long before it is static
    sightings: int = 3  # ... in at least this many frames
    iou: float = 0.5  # a detection at the same place: IoU with the spot's reference box
    growth: float = 0.25  # area growth over the reference that releases a static spot (a fire grows)
    max_hours: float = 24.0  # a spot learnt online is re-examined after this long: renewed if still there, else dropped
    forget_hours: float = 6.0  # a spot not seen this long is forgotten

    def __post_init__(self) -> None:
        checks = {
            "minutes": self.minutes >= 0,
            "sightings": isinstance(self.sightings, int) and self.sightings >= 1,
            "iou": 0.0 < self.iou <= 1.0,
            "growth": self.growth > 0,
            "max_hours": self.max_hours > 0,
            "forget_hours": self.forget_hours > 0,
        }
        bad = [f"{k} {getattr(self, k)!r}" for k, ok in checks.items() if not (ok and _finite(getattr(self, k)))]
        if bad:
            raise InputError(f"static suppression: bad values: {', '.join(bad)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, source: object = "the static rule") -> StaticRule:
        known = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) - known:
            raise InputError(f"{source}: not a static-suppression rule ({raw!r})")
        return cls(**raw)


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _area(box: tuple[float, ...]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


@dataclass
class Spot:
    class_id: int
    box: tuple[float, float, float, float]  # the reference: the box the spot was learnt from
    first_seen: float  # seconds (the frames' time)
    last_seen: float
    sightings: int = 1
    static_since: float | None = None
    origin: str = "online"  # "online" (learnt from the frames) or "seeded" (a folder of smoke-free frames)

    def reason(self, now: float) -> str:
        how = "in the camera's smoke-free frames" if self.origin == "seeded" else "not growing"
        minutes = (now - self.first_seen) / 60
        return f"static: seen at this place in {self.sightings} frames over {minutes:.0f} min, {how}"


@dataclass
class Suppressed:
    detection: Detection
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.detection.to_dict(), "suppressed": self.reason}


@dataclass
class StaticMemory:
    """One camera's spots under ``rule``; ``filter`` takes a frame's detections in time order."""

    rule: StaticRule = field(default_factory=StaticRule)
    spots: list[Spot] = field(default_factory=list)
    released: int = 0  # static spots a growing detection released

    def _match(self, d: Detection) -> Spot | None:
        same = [s for s in self.spots if s.class_id == d.class_id]
        if not same:
            return None
        ious = box_iou(np.array([d.box]), np.array([s.box for s in same]))[0]
        best = int(ious.argmax())
        return same[best] if ious[best] >= self.rule.iou else None

    def _expire(self, now: float) -> None:
        r = self.rule
        kept = []
        for s in self.spots:
            if now - s.last_seen > r.forget_hours * 3600:
                continue  # forgotten
            if s.origin == "online" and s.static_since is not None and now - s.static_since > r.max_hours * 3600:
                if now - s.last_seen > r.minutes * 60:
                    continue  # gone a while at its time limit: learnt again from scratch if it returns
                # still there, never grown past its reference: dropping it would raise one false alarm per artefact
                # per max_hours while it is learnt again (a camera-day's budget is one), so it is renewed instead
                s.static_since = now
            kept.append(s)
        self.spots = sorted(kept, key=lambda s: s.last_seen)[-MAX_SPOTS:]

    def filter(self, now: float, detections: list[Detection]) -> tuple[list[Detection], list[Suppressed]]:
        """(the detections that go on to the alarm logic, those suppressed with the reason); learns from all."""
        self._expire(now)
        kept, suppressed = [], []
        for d in detections:
            spot = self._match(d)
            if spot is None:
                self.spots.append(Spot(d.class_id, d.box, now, now))
                kept.append(d)
                continue
            if _area(d.box) > (1 + self.rule.growth) * _area(spot.box):  # it grows: a fire, not an artefact
                self.released += spot.static_since is not None
                spot.box, spot.first_seen, spot.sightings, spot.static_since, spot.origin = (
                    d.box,
                    now,
                    1,
                    None,
                    "online",
                )
                spot.last_seen = now
                kept.append(d)
                continue
            if now > spot.last_seen:  # several boxes of one frame on one spot are one sighting
                spot.sightings += 1
            spot.last_seen = now
            r = self.rule
            if spot.static_since is None and spot.sightings >= r.sightings and now - spot.first_seen >= r.minutes * 60:
                spot.static_since = now
            if spot.static_since is not None:
                suppressed.append(Suppressed(d, spot.reason(now)))
            else:
                kept.append(d)
        return kept, suppressed

    def learn(self, now: float, detections: list[Detection]) -> None:
        """Detections in a frame known to be smoke-free (the camera's own history): static once seen twice."""
        for d in detections:
            spot = self._match(d)
            if spot is None:
                self.spots.append(Spot(d.class_id, d.box, now, now, origin="seeded"))
            elif now > spot.last_seen:
                spot.sightings, spot.last_seen, spot.origin = spot.sightings + 1, now, "seeded"
                spot.static_since = spot.static_since if spot.static_since is not None else now

    @property
    def static_spots(self) -> int:
        return sum(s.static_since is not None for s in self.spots)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule.to_dict(), "spots": [asdict(s) for s in self.spots]}

    @classmethod
    def from_dict(cls, raw: Any, source: object = "the static memory") -> StaticMemory:
        try:
            rule = StaticRule.from_dict(raw["rule"], source)
            spots = [Spot(**{**s, "box": tuple(float(v) for v in s["box"])}) for s in raw["spots"]]
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{source}: not a camera's static memory ({type(e).__name__}: {e})") from None
        return cls(rule, spots)
