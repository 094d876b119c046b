"""The camera figures of both models at the student's operating point: false alarms on smoke-free frames (the
split's unlabelled images plus `validation.negatives`) and recall by object size (edge/figures.py computes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ValidateSettings
from ..data import DatasetInfo, label_path, undecodable
from ..edge.boxes import DEFAULT_IOU
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


def predicted_boxes(yolo, source, imgsz: int, conf: float, device: str, iou: float = DEFAULT_IOU) -> list[Box]:
    """``yolo``'s detections (ultralytics' predictor) in ``source``, a frame's path or its pixels, as normalised
    boxes."""
    results = yolo.predict(source, imgsz=imgsz, conf=conf, iou=iou, device=device or None, verbose=False)
    if not results:  # ultralytics could not read it after all
        raise InputError(f"{source}: ultralytics cannot read this image; remove or replace it")
    r = results[0]
    return [(int(c), *map(float, b)) for c, b in zip(r.boxes.cls, r.boxes.xyxyn, strict=True)]


def negative_frames(folder: str | None) -> tuple[list[str], list[str]]:
    """(readable, unreadable) smoke-free frames of ``validation.negatives``: each decoded whole, as the preflight
    does; an unreadable one is reported, never dropped silently. A folder without images is bad input."""
    if not folder:
        return [], []
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"validation.negatives {root}: not a folder of smoke-free frames")
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise InputError(
            f"validation.negatives {root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it; "
            "give a folder of smoke-free frames, or leave the key unset"
        )
    readable, unreadable = [], []
    for path in images:
        (readable if undecodable(path) is None else unreadable).append(str(path))
    return readable, unreadable


def both_models(
    yolos: dict[str, Any],
    info: DatasetInfo,
    settings: ValidateSettings,
    imgsz: int,
    device: str,
    point: dict[str, Any] | None,
    negatives_folder: tuple[list[str], list[str]],
) -> dict[str, Any]:
    """Both models' false alarms and recall by size at the student's operating point (else agreement_conf).

    ``yolos``: role -> a loaded ultralytics YOLO; ``negatives_folder``: :func:`negative_frames` of
    validation.negatives. Images the preflight found a problem in (and tolerated) are skipped here as training
    skipped them, and listed."""
    conf = point["conf"] if point and point.get("conf") is not None else settings.agreement_conf
    frames = info.usable(settings.split)
    truths = ground_truth(frames)
    negatives = {f for f, objects in truths.items() if not objects}
    extra, unreadable = negatives_folder
    negatives |= set(extra)
    scored = [str(f) for f in frames] + extra
    report: dict[str, Any] = {"conf": conf, "small_area": settings.small_area, "large_area": settings.large_area}
    for role in ("student", "teacher"):
        predictions = {}
        for frame in scored:
            predictions[frame] = predicted_boxes(yolos[role], frame, imgsz, conf, device, settings.iou)
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
