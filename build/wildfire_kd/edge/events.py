"""One event per fire: a camera's alarms grouped into events a dispatcher can follow.

A growing plume rises and widens: its box soon overlaps its first box too little for the alarm logic to call it the
same object, the held alarm is released and the plume alarms again, and again. Here an alarm that overlaps an open
event's neighbourhood (the boxes the event has had, widened by ``margin`` of their size sideways and downwards and by
``rise`` upwards: the plume's column) updates that event instead of opening another. Each event has a stable id and a
life: ``opened`` (its first alarm), ``updated`` (news: an alarm of a class it did not have, or its extent, the union
of a frame's boxes on it, grown or moved off the last one reported; one alert per frame at most), ``closed`` (nothing
confirmed on it for ``close_minutes``, or static suppression took it: the reason says). Fire and smoke of one fire are
one event: grouping does not look at the class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import InputError
from .alarms import Alarm
from .boxes import Detection, box_iou

UPDATE_IOU = 0.5  # an event whose extent overlaps its last reported extent less than this is reported again


@dataclass(frozen=True)
class EventRule:
    """How alarms become events (see the module's doc)."""

    margin: float = 0.5  # the neighbourhood: the event's box widened by this fraction of its size, sideways and down
    rise: float = 1.5  # ... and by this fraction of its height upwards (smoke rises)
    close_minutes: float = 30.0  # an event with nothing confirmed on it this long is closed

    def __post_init__(self) -> None:
        values = {"margin": self.margin, "rise": self.rise, "close_minutes": self.close_minutes}
        bad = [
            f"{k} {v!r}" for k, v in values.items() if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0)
        ]
        if bad:
            raise InputError(f"event grouping: bad values: {', '.join(bad)} (each >= 0)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, source: object = "the event rule") -> EventRule:
        known = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) - known:
            raise InputError(f"{source}: not an event-grouping rule ({raw!r})")
        return cls(**raw)


def _union(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _touch(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


@dataclass
class Event:
    id: str
    camera: str
    opened_frame: str
    opened_time: float
    region: tuple[float, float, float, float]  # every box it has had, united
    box: tuple[float, float, float, float]  # the box last reported
    last_seen: float  # the last time something confirmed was on it
    alarms: int = 1
    classes: list[str] = field(default_factory=list)
    reports: int = 0  # alerts about it so far: the next alert's number (stable alert ids)

    def report(self, status: str, frame: str, time: float, detection, confirmed_by, reason=None) -> Alert:
        alert = Alert(self.id, status, self.camera, frame, time, detection, list(confirmed_by), reason, self.reports)
        self.reports += 1
        return alert

    def neighbourhood(self, rule: EventRule) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = self.region
        w, h = x2 - x1, y2 - y1
        return (x1 - rule.margin * w, y1 - rule.rise * h, x2 + rule.margin * w, y2 + rule.margin * h)


@dataclass
class Alert:
    """One line of alerts.jsonl: an event opened, updated or closed."""

    event: str
    status: str  # "opened", "updated", "closed"
    camera: str
    frame: str
    time: float
    detection: Detection | None
    confirmed_by: list[str] = field(default_factory=list)
    reason: str | None = None  # why an update or a close happened
    number: int = 0  # its place among its event's alerts

    @property
    def id(self) -> str:
        """Stable: the same alert has the same id after a restart, so a receiver can drop duplicates."""
        return f"{self.event}/{self.number}"

    def to_dict(self) -> dict[str, Any]:
        row = {"id": self.id, "event": self.event, "status": self.status, "camera": self.camera, "frame": self.frame,
               "time": self.time}  # fmt: skip
        if self.detection is not None:
            row |= self.detection.to_dict()
        row["confirmed_by"] = self.confirmed_by
        if self.reason:
            row["reason"] = self.reason
        return row


@dataclass
class _FrameEvent:
    """What one frame brought to one event: its boxes (the extent), the alarms on it, the classes it adds."""

    event: Event
    opened: bool = False
    detections: list[Detection] = field(default_factory=list)
    confirmed_by: list[str] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)

    def add(self, d: Detection, confirmed_by: list[str], alarm: bool) -> None:
        event = self.event
        self.detections.append(d)
        self.confirmed_by += [f for f in confirmed_by if f not in self.confirmed_by]
        event.region = _union(event.region, d.box)  # the neighbourhood widens as the plume does, within the frame
        if alarm and d.name not in event.classes:
            event.classes = sorted({*event.classes, d.name})
            if not self.opened:
                self.new_classes.append(d.name)

    def alert(self, frame: str, time: float) -> Alert | None:
        event, boxes = self.event, [d.box for d in self.detections]
        extent = tuple(min(b[i] for b in boxes) for i in (0, 1)) + tuple(max(b[i] for b in boxes) for i in (2, 3))
        best = max(self.detections, key=lambda d: d.confidence)
        shown = Detection(best.class_id, best.name, best.confidence, extent)
        event.last_seen = time
        if self.opened:
            event.box = extent
            return event.report("opened", frame, time, shown, self.confirmed_by)
        reasons = [f"new class: {name}" for name in self.new_classes]
        if float(box_iou(np.array([extent]), np.array([event.box]))[0, 0]) < UPDATE_IOU:
            reasons.append("grew or moved")
        if not reasons:
            return None
        event.box = extent
        return event.report("updated", frame, time, shown, self.confirmed_by, "; ".join(reasons))


@dataclass
class EventGrouper:
    """One camera's events under ``rule`` (None: grouping off, every alarm is an event of its own)."""

    camera: str
    rule: EventRule | None = field(default_factory=EventRule)
    open: list[Event] = field(default_factory=list)
    opened: int = 0  # events opened so far (ids count on from here after a restart)

    def _new_id(self, time: float) -> str:
        self.opened += 1
        return f"{self.camera}-{int(time)}-{self.opened}"

    def _open(self, alarm: Alarm, time: float) -> Alert:
        d = alarm.detection
        event = Event(self._new_id(time), self.camera, alarm.frame, time, d.box, d.box, time, classes=[d.name])
        if self.rule is not None:
            self.open.append(event)
        return event.report("opened", alarm.frame, time, d, alarm.confirmed_by)

    def _joins(self, d: Detection) -> Event | None:
        return next((e for e in self.open if _touch(e.neighbourhood(self.rule), d.box)), None)

    def update(
        self,
        frame: str,
        time: float,
        alarms: list[Alarm],
        held: list[Detection],
        static: list[Detection] = (),
        seen: list[Detection] = (),
    ) -> list[Alert]:
        """This frame's alerts: from its new ``alarms``, the objects the alarm logic still ``held`` (alive, perhaps
        grown), and the detections ``static`` suppression took (closing the event they were on, unless this frame
        ``seen`` something else on it). An event gets one alert per frame at most, and an update only with news: a
        class it did not have, or its extent (the union of this frame's boxes on it) grown or moved off the last one
        reported; a plume of many boxes, each re-alarming or shifting a little, is one event that speaks when the fire
        changes, not at every frame."""
        if self.rule is None:
            return [self._open(a, time) for a in alarms]
        frame_events: dict[str, _FrameEvent] = {}  # in order of first touch this frame
        for alarm in alarms:
            d = alarm.detection
            event = self._joins(d)
            if event is None:
                event = Event(self._new_id(time), self.camera, frame, time, d.box, d.box, time)
                self.open.append(event)
                frame_events[event.id] = _FrameEvent(event, opened=True)
            else:
                event.alarms += 1
            frame_events.setdefault(event.id, _FrameEvent(event)).add(d, alarm.confirmed_by, alarm=True)
        for d in held:
            event = self._joins(d)
            if event is not None:
                frame_events.setdefault(event.id, _FrameEvent(event)).add(d, [frame], alarm=False)
        alerts = [a for f in frame_events.values() if (a := f.alert(frame, time)) is not None]
        return alerts + self._close(frame, time, static, seen)

    def _close(self, frame: str, time: float, static: list[Detection], seen: list[Detection] = ()) -> list[Alert]:
        """Close the events static suppression took (all this frame saw on them was static: a part of a plume that
        stays put while the rest grows does not close its fire) and those quiet for close_minutes."""
        alerts, still = [], []
        for event in self.open:
            taken = next((d for d in static if _touch(event.box, d.box)), None)
            if taken is not None and not any(_touch(event.box, d.box) for d in seen):
                alerts.append(event.report("closed", frame, time, taken, [], "static: suppressed"))
            elif time - event.last_seen > self.rule.close_minutes * 60:
                minutes = f"nothing confirmed on it for {self.rule.close_minutes:g} min"
                alerts.append(event.report("closed", frame, time, None, [], minutes))
            else:
                still.append(event)
        self.open = still
        return alerts

    def state(self) -> dict[str, Any]:
        """The open events and the count of events opened, to save (ids count on after a restart)."""
        return {"opened": self.opened, "open": [asdict(e) for e in self.open]}

    def restore(self, state: dict[str, Any]) -> None:
        self.opened = int(state.get("opened", 0))
        boxes = ("region", "box")
        self.open = [Event(**{**e, **{k: tuple(e[k]) for k in boxes}}) for e in state.get("open", [])]
