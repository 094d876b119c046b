"""One camera's path from detections to alerts, the one code path of `detect --sequence`, the sequence figures of
`validate` and the benchmarks (and the service):

    detections (masked) -> static memory (static.py) -> alarm rule (alarms.py) -> events (events.py) -> alerts

Each step can be switched off by its settings (``static`` / ``events`` None): the benchmarks measure each one's part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .alarms import DEFAULT_RULE, Alarm, AlarmRule, Confirmer
from .boxes import Detection
from .events import Alert, EventGrouper, EventRule
from .static import StaticMemory, StaticRule, Suppressed


@dataclass(frozen=True)
class CameraSettings:
    """How a camera turns detections into alerts."""

    rule: AlarmRule = DEFAULT_RULE
    static: StaticRule | None = field(default_factory=StaticRule)  # None: no static suppression
    events: EventRule | None = field(default_factory=EventRule)  # None: every alarm an alert of its own

    def describe(self) -> str:
        static = "static suppression on" if self.static else "static suppression off"
        events = "one event per fire" if self.events else "an alert per alarm"
        return f"alarm: {self.rule.describe()}; {static}; {events}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.to_dict(),
            "static": self.static.to_dict() if self.static else None,
            "events": self.events.to_dict() if self.events else None,
        }


@dataclass
class FrameOutcome:
    seen: list[Detection]  # what the alarm rule saw (after static suppression)
    suppressed: list[Suppressed]
    alarms: list[Alarm]
    alerts: list[Alert]


class CameraPath:
    """One camera's frames in time order -> alerts, under ``settings``; ``memory``: its static memory, if kept."""

    def __init__(self, camera: str, settings: CameraSettings, memory: StaticMemory | None = None):
        self.camera, self.settings = camera, settings
        self.confirmer = Confirmer(settings.rule)
        self.memory = (memory or StaticMemory(settings.static)) if settings.static is not None else None
        self.events = EventGrouper(camera, settings.events)

    def frame(self, frame: str, time: float, detections: list[Detection]) -> FrameOutcome:
        """The next frame's detections (down to the rule's floor, masked) at ``time`` (seconds)."""
        seen, suppressed = detections, []
        if self.memory is not None:
            seen, suppressed = self.memory.filter(time, detections)
        alarms = self.confirmer.update(frame, seen)
        static = [s.detection for s in suppressed]
        alerts = self.events.update(frame, time, alarms, self.confirmer.held, static, seen)
        return FrameOutcome(seen, suppressed, alarms, alerts)

    def state(self) -> dict:
        """All this camera knows from its frames so far (alarm window, held alarms, events, static memory)."""
        return {
            "confirmer": self.confirmer.state(),
            "events": self.events.state(),
            "memory": self.memory.to_dict() if self.memory is not None else None,
        }

    def restore(self, state: dict) -> None:
        """Back to a saved ``state`` (a restarted service): the same alarms follow as if it had never stopped."""
        self.confirmer.restore(state.get("confirmer") or {})
        self.events.restore(state.get("events") or {})
        if self.memory is not None and state.get("memory"):
            self.memory = StaticMemory.from_dict(state["memory"], f"camera {self.camera}'s saved static memory")

    def new_view(self) -> None:
        """The view changed (another frame size): boxes no longer line up with the past; start again from here."""
        self.confirmer = Confirmer(self.settings.rule)
        if self.memory is not None:
            self.memory = StaticMemory(self.settings.static)
