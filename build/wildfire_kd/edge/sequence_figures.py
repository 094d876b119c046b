"""How a camera network judges a detector: over its cameras' streams of frames, not single images.

Per sequence (sequences.py): whether its fire was detected and how long after onset (minutes and frames), and the
false alarms it raised on frames without smoke. In total, at the sequence level as Pyronear scores its models: a
fire sequence alarmed on its plume is a true positive (else a false negative), a smoke-free sequence with any alarm a
false positive (else a true negative): precision, recall, F1 and false-positive rate; and false alarms per
camera-day, from the time the smoke-free frames stand for (frames x interval). An alarm counts on the plume when it
comes at or after onset and, where the plume's box is known, touches it; any other alarm is a false alarm.

`choose_rule` picks the alarm rule (alarms.py) that finds the most fires within a false-alarm budget per camera-day.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .alarms import AlarmRule, Confirmer
from .boxes import Detection, box_iou
from .sequences import Sequence

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
    minutes_to_detection: float | None  # from onset to the alarm on the plume
    frames_to_detection: int | None  # frames after the first smoke frame (0: alarmed on it)
    false_alarms: int
    alarms: list[dict[str, Any]] = field(default_factory=list)


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
    per_sequence: list[SequenceOutcome] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _touches(box: tuple[float, ...], plume: tuple[float, ...] | None) -> bool:
    return plume is None or bool(box_iou(np.array([box]), np.array([plume]))[0, 0] > 0)


def outcome(sequence: Sequence, detections: list[FrameDetections], rule: AlarmRule) -> SequenceOutcome:
    """One sequence under ``rule``: the alarms ``detections`` (per frame, in order) raise, and what they were."""
    confirmer, alarms, false_alarms, detected_at = Confirmer(rule), [], 0, None
    first_smoke = next((i for i, f in enumerate(sequence.frames) if f.smoke), None)
    for i, (frame, dets) in enumerate(zip(sequence.frames, detections, strict=True)):
        if dets is None:
            continue
        for alarm in confirmer.update(frame.path.name, dets):
            on_plume = frame.smoke and _touches(alarm.detection.box, frame.box)
            false_alarms += not on_plume
            if on_plume and detected_at is None:
                detected_at = i
            alarms.append({"frame": frame.path.name, "time": frame.time, "on_plume": on_plume, **alarm.to_dict()})
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
        alarms=alarms,
    )


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def figures(
    sequences: list[Sequence], detections: dict[str, list[FrameDetections]], rule: AlarmRule
) -> SequenceFigures:
    """Every sequence under ``rule``, and the totals (module doc)."""
    outcomes = [outcome(s, detections[s.name], rule) for s in sequences]
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
    return SequenceFigures(
        rule=rule.to_dict(),
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
        per_sequence=outcomes,
    )


def detections_of(model, sequences: list[Sequence], conf: float, iou: float, tiles: int = 1, masks: bool = True):
    """Each sequence's frames through ``model`` (a CameraModel) at ``conf``, the camera's mask applied (masks.py):
    sequence name -> per frame its detections (None: unreadable). Run once at the lowest floor a rule will use."""
    import cv2

    from .masks import CameraMask

    found: dict[str, list[FrameDetections]] = {}
    for sequence in sequences:
        mask = CameraMask(sequence.folder) if masks else None
        frames: list[FrameDetections] = []
        for frame in sequence.frames:
            image = cv2.imread(str(frame.path))
            dets = None if image is None else model.detect(image, conf=conf, iou=iou, tiles=tiles)
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
    sequences: list[Sequence], detections: dict[str, list[FrameDetections]], budget: float, floor: float
) -> tuple[AlarmRule, SequenceFigures]:
    """The rule with the highest sequence recall whose false alarms per camera-day stay within ``budget``; among
    equals, the earliest median detection, then the fewest false alarms, then the simplest (listed first). With no
    rule within budget: the one with the fewest false alarms per camera-day."""
    scored = [(rule, figures(sequences, detections, rule)) for rule in candidate_rules(floor)]

    def key(item):
        f = item[1]
        fa = f.false_alarms_per_camera_day or 0.0
        delay = f.median_minutes_to_detection if f.median_minutes_to_detection is not None else float("inf")
        return (fa > budget, fa if fa > budget else 0.0, -(f.recall or 0.0), delay, fa)

    return min(scored, key=key)
