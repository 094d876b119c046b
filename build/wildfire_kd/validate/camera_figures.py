"""The camera figures of both models at the student's operating point: false alarms on smoke-free frames (the
split's unlabelled images plus `validation.negatives`) and recall by object size (edge/figures.py computes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ValidateSettings
from ..data import DatasetInfo, label_path
from ..edge.figures import BUCKETS, Box, camera_figures
from ..edge.letterbox import IMAGE_SUFFIXES
from ..errors import InputError
from .result import ratio


def _xywh_to_xyxy(v: list[float]) -> tuple[float, float, float, float]:
    return v[0] - v[2] / 2, v[1] - v[3] / 2, v[0] + v[2] / 2, v[1] + v[3] / 2


def ground_truth(frames: list[Path]) -> dict[str, list[Box]]:
    """Each frame's labelled objects as normalised xyxy boxes (frames the preflight passed: well-formed rows)."""
    truths: dict[str, list[Box]] = {}
    for frame in frames:
        label = label_path(frame)
        text = label.read_text(encoding="utf-8") if label.is_file() else ""
        rows = [r.split() for r in text.splitlines() if r.strip()]
        truths[str(frame)] = [(int(float(r[0])), *_xywh_to_xyxy([float(v) for v in r[1:5]])) for r in rows]
    return truths


def negative_frames(folder: str | None) -> tuple[list[str], list[str]]:
    """(readable, unreadable) smoke-free frames of ``validation.negatives`` (an unreadable one is reported)."""
    import cv2

    if not folder:
        return [], []
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"validation.negatives {root}: not a folder of smoke-free frames")
    readable, unreadable = [], []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        (readable if cv2.imread(str(path)) is not None else unreadable).append(str(path))
    return readable, unreadable


def both_models(
    yolos: dict[str, Any],
    info: DatasetInfo,
    settings: ValidateSettings,
    imgsz: int,
    device: str,
    point: dict[str, Any] | None,
) -> dict[str, Any]:
    """Both models' false alarms and recall by size at the student's operating point (else agreement_conf).

    ``yolos``: role -> a loaded ultralytics YOLO. Images the preflight found a problem in (and tolerated) are
    skipped here as training skipped them, and listed."""
    conf = point["conf"] if point and point.get("conf") is not None else settings.agreement_conf
    frames = info.usable(settings.split)
    truths = ground_truth(frames)
    negatives = {f for f, objects in truths.items() if not objects}
    extra, unreadable = negative_frames(settings.negatives)
    negatives |= set(extra)
    scored = [str(f) for f in frames] + extra
    report: dict[str, Any] = {"conf": conf, "small_area": settings.small_area, "large_area": settings.large_area}
    for role in ("student", "teacher"):
        predictions = {}
        for frame in scored:
            r = yolos[role].predict(
                frame, imgsz=imgsz, conf=conf, iou=settings.iou, device=device or None, verbose=False
            )[0]
            predictions[frame] = [(int(c), *map(float, b)) for c, b in zip(r.boxes.cls, r.boxes.xyxyn, strict=True)]
        report[role] = camera_figures(
            predictions, truths, negatives, conf, settings.small_area, settings.large_area, unreadable=unreadable
        ).to_dict()
    report["recall_retention"] = {
        b: ratio(report["student"]["recall_by_size"][b]["recall"], report["teacher"]["recall_by_size"][b]["recall"])
        for b in BUCKETS
    }
    skipped = sorted(set(map(str, info.images(settings.split))) - {str(f) for f in frames})
    if skipped:
        report["skipped"] = skipped  # flagged by the preflight and tolerated (train.max_bad_fraction)
    return report
