"""How a camera network judges a detector: over its cameras' streams of frames, not single images.

Each sequence (sequences.py) runs through the camera's path (camera.py: static suppression, the alarm rule, one
event per fire), as `detect --sequence` runs it. Per sequence: whether its fire was found and how long after onset
(minutes and frames), the alerts a dispatcher got (events opened), on the fire and false. In total, at the sequence
level as Pyronear scores its models: a fire sequence alarmed on its plume is a true positive (else a false negative),
a smoke-free sequence with any alert a false positive (else a true negative): precision, recall, F1 and false-positive
rate; false alarms per camera-day, from the time the smoke-free frames stand for (frames x interval); alerts per fire
found (one event per fire: 1). An alert counts on the plume when it comes at or after onset and touches the plume's
box; where a sequence has no box (frame labels only), any alert after onset does, and the figures count those
sequences (``judged_by_frame_labels``). Any other alert is a false alarm.

`choose_rule` picks the alarm rule (alarms.py) that finds the most fires within a false-alarm budget per camera-day.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .alarms import AlarmRule
from .boxes import Detection, box_iou
from .camera import CameraPath, CameraSettings
from .sequences import Sequence
from .static import StaticMemory

DAY_S = 86_400.0
FrameDetections = list[Detection] | None  # None: the frame could not be read


@dataclass
class SequenceOutcome:
    name: str
    positive: bool
    frames: int
    interval_s: float
    smoke_free_frames: int
    detected: bool | None  # None for a smoke-free sequence
    minutes_to_detection: float | None  # from onset to the first alert on the plume
    frames_to_detection: int | None  # frames after the first smoke frame (0: alarmed on it)
    false_alarms: int  # events opened off the plume (or before onset)
    alerts_on_fire: int = 0  # events opened on the plume: one event per fire is 1
    suppressed: int = 0  # detections static suppression took
    located: bool = True  # the plume's box is known (else judged by the frame labels alone)
    alarms: list[dict[str, Any]] = field(default_factory=list)  # every alert: opened, updated, closed


@dataclass
class SequenceFigures:
    rule: dict[str, Any]
    sequences: int
    positives: int
    negatives: int
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int
    precision: float | None
    recall: float | None
    f1: float | None
    false_positive_rate: float | None
    median_minutes_to_detection: float | None
    mean_minutes_to_detection: float | None
    median_frames_to_detection: float | None
    false_alarms: int
    smoke_free_hours: float
    false_alarms_per_camera_day: float | None
    alerts_per_fire: float | None = None  # events opened on the plume per fire found (1: one event per fire)
    suppressed: int = 0  # detections static suppression took, in all sequences
    judged_by_frame_labels: int = 0  # fire sequences without a box or region: any alert after onset counted
    camera: dict[str, Any] | None = None  # the camera path's settings: static suppression, events
    per_sequence: list[SequenceOutcome] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _touches(box: tuple[float, ...], plume: tuple[float, ...] | None) -> bool:
    return plume is None or bool(box_iou(np.array([box]), np.array([plume]))[0, 0] > 0)


def settings_of(rule: AlarmRule | CameraSettings) -> CameraSettings:
    """A camera path's settings: a bare rule runs with the default static suppression and event grouping."""
    return rule if isinstance(rule, CameraSettings) else CameraSettings(rule)


def outcome(
    sequence: Sequence,
    detections: list[FrameDetections],
    rule: AlarmRule | CameraSettings,
    memory: StaticMemory | None = None,
) -> SequenceOutcome:
    """One sequence through the camera path: the alerts ``detections`` (per frame, in order) raise, and what they
    were. ``memory``: the camera's static memory to start from (a copy is used)."""
    path = CameraPath(sequence.name, settings_of(rule), copy.deepcopy(memory))
    alerts, false_alarms, on_fire, suppressed, detected_at = [], 0, 0, 0, None
    first_smoke = next((i for i, f in enumerate(sequence.frames) if f.smoke), None)
    for i, (frame, dets) in enumerate(zip(sequence.frames, detections, strict=True)):
        if dets is None:
            continue
        result = path.frame(frame.path.name, frame.time, dets)
        suppressed += len(result.suppressed)
        for alert in result.alerts:
            if alert.status == "closed":
                alerts.append({**alert.to_dict(), "on_plume": None})
                continue
            on_plume = frame.smoke and _touches(alert.detection.box, frame.box)
            if alert.status == "opened":
                false_alarms += not on_plume
                on_fire += on_plume
            if on_plume and detected_at is None:
                detected_at = i
            alerts.append({**alert.to_dict(), "on_plume": on_plume})
    detected = detected_at is not None if sequence.positive else None
    return SequenceOutcome(
        name=sequence.name,
        positive=sequence.positive,
        frames=len(sequence.frames),
        interval_s=sequence.interval,
        smoke_free_frames=sum(not f.smoke for f in sequence.frames),
        detected=detected,
        minutes_to_detection=(sequence.frames[detected_at].time - sequence.onset) / 60 if detected else None,
        frames_to_detection=detected_at - first_smoke if detected else None,
        false_alarms=false_alarms,
        alerts_on_fire=on_fire,
        suppressed=suppressed,
        located=sequence.located or not sequence.positive,
        alarms=alerts,
    )


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def figures(
    sequences: list[Sequence],
    detections: dict[str, list[FrameDetections]],
    rule: AlarmRule | CameraSettings,
    memories: dict[str, StaticMemory] | None = None,
) -> SequenceFigures:
    """Every sequence through the camera path under ``rule`` (a bare rule: the default camera path), and the
    totals (module doc). ``memories``: each camera's static memory to start from (by sequence name)."""
    settings = settings_of(rule)
    outcomes = [outcome(s, detections[s.name], settings, (memories or {}).get(s.name)) for s in sequences]
    tp = sum(o.positive and o.detected for o in outcomes)
    fn = sum(o.positive and not o.detected for o in outcomes)
    fp = sum(not o.positive and o.false_alarms > 0 for o in outcomes)
    tn = sum(not o.positive and o.false_alarms == 0 for o in outcomes)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if tp + fp + fn else None)
    minutes = [o.minutes_to_detection for o in outcomes if o.minutes_to_detection is not None]
    frames = [o.frames_to_detection for o in outcomes if o.frames_to_detection is not None]
    watched_s = sum(o.smoke_free_frames * o.interval_s for o in outcomes)
    false_alarms = sum(o.false_alarms for o in outcomes)
    found = [o.alerts_on_fire for o in outcomes if o.detected]
    return SequenceFigures(
        rule=settings.rule.to_dict(),
        sequences=len(outcomes),
        positives=tp + fn,
        negatives=fp + tn,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        precision=precision,
        recall=recall,
        f1=f1,
        false_positive_rate=_ratio(fp, fp + tn),
        median_minutes_to_detection=statistics.median(minutes) if minutes else None,
        mean_minutes_to_detection=statistics.fmean(minutes) if minutes else None,
        median_frames_to_detection=statistics.median(frames) if frames else None,
        false_alarms=false_alarms,
        smoke_free_hours=watched_s / 3600,
        false_alarms_per_camera_day=false_alarms / (watched_s / DAY_S) if watched_s else None,
        alerts_per_fire=statistics.fmean(found) if found else None,
        suppressed=sum(o.suppressed for o in outcomes),
        judged_by_frame_labels=sum(not o.located for o in outcomes),
        camera=settings.to_dict(),
        per_sequence=outcomes,
    )


def detections_of(
    model, sequences: list[Sequence], conf: float, iou: float, tiles: int | str | None = 1, masks: bool = True
):
    """Each sequence's frames through ``model`` (a CameraModel) at ``conf`` and ``tiles`` (a number, AUTO, or None:
    the model's camera profile), the camera's mask applied (masks.py): sequence name -> per frame its detections
    (None: unreadable). Run once at the lowest floor a rule will use."""
    import cv2

    from .masks import CameraMask

    found: dict[str, list[FrameDetections]] = {}
    for sequence in sequences:
        mask = CameraMask(sequence.folder) if masks else None
        frames: list[FrameDetections] = []
        for frame in sequence.frames:
            image = cv2.imread(str(frame.path))
            dets = None
            if image is not None:
                n, _ = model.tiles_for(image.shape[1], image.shape[0], tiles)
                dets = model.detect(image, conf=conf, iou=iou, tiles=n)
            if dets is not None and mask is not None:
                dets = mask.keep(dets, image.shape[1], image.shape[0])[0]
            frames.append(dets)
        found[sequence.name] = frames
    return found


def early_plume_recall(
    sequences: list[Sequence], found: dict[str, list[FrameDetections]], minutes: float, conf: float = 0.0
) -> float | None:
    """The share of frames within ``minutes`` of smoke onset (while the plume is small and distant) in which a
    detection at ``conf`` or above touches the plume's box; None when no such frame has a box."""
    hits = total = 0
    for s in sequences:
        for frame, dets in zip(s.frames, found[s.name], strict=True):
            if frame.smoke and frame.box and s.onset is not None and frame.time - s.onset < minutes * 60:
                total += 1
                hits += any(d.confidence >= conf and _touches(d.box, frame.box) for d in dets or [])
    return hits / total if total else None


def candidate_rules(floor: float) -> list[AlarmRule]:
    """The rules `choose_rule` compares, simplest first: k of n counting and summed confidence, at per-frame floors
    from ``floor`` up, each with and without hysteresis."""
    floors = sorted({round(f, 3) for f in (floor, 0.1, 0.2, 0.3, 0.4, 0.5) if f >= floor})
    rules = []
    for release in (1.0, 0.5):
        for n, ks in ((1, (1,)), (2, (1, 2)), (3, (1, 2, 3)), (5, (1, 2, 3, 5)), (8, (1, 2, 3, 5))):
            rules += [AlarmRule("count", n=n, k=k, floor=f, release=release) for k in ks for f in floors]
        for n in (3, 5, 8):
            for mean in (0.15, 0.25, 0.35, 0.5):
                threshold = round(mean * n, 3)
                rules += [AlarmRule("score", n=n, threshold=threshold, floor=f, release=release) for f in floors[:3]]
    return rules


def choose_rule(
    sequences: list[Sequence],
    detections: dict[str, list[FrameDetections]],
    budget: float,
    floor: float,
    camera: CameraSettings | None = None,
) -> tuple[AlarmRule, SequenceFigures]:
    """The rule with the highest sequence recall whose false alarms per camera-day stay within ``budget``; among
    equals, the earliest median detection, then the fewest false alarms, then the simplest (listed first). With no
    rule within budget: the one with the fewest false alarms per camera-day. Each rule runs in the camera path of
    ``camera`` (its static suppression and events; default: CameraSettings's)."""
    camera = camera or CameraSettings()
    scored = [(rule, figures(sequences, detections, replace(camera, rule=rule))) for rule in candidate_rules(floor)]

    def key(item):
        f = item[1]
        fa = f.false_alarms_per_camera_day or 0.0
        delay = f.median_minutes_to_detection if f.median_minutes_to_detection is not None else float("inf")
        return (fa > budget, fa if fa > budget else 0.0, -(f.recall or 0.0), delay, fa)

    return min(scored, key=key)
