"""`detect`: run a model file over image files as a camera does (numpy, OpenCV and its runtime only).

Writes OUT/detections.jsonl (one line per image: file, size, detections, or the error that made it unreadable), with
``sequence`` OUT/alerts.jsonl (temporally confirmed alarms), with ``save_images`` annotated copies in OUT/images/.
An unreadable image is reported and the rest go on; only when nothing could be read is it an error (exit 2).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..guard import refuse_overwriting_inputs
from ..layout import ALERTS, ANNOTATED_DIR, DETECTIONS
from .alarms import Confirmer, rule_with
from .boxes import DEFAULT_IOU, Detection
from .letterbox import IMAGE_SUFFIXES
from .masks import CameraMask
from .model import CameraModel
from .sequences import is_frame

COLORS = {0: (160, 160, 160), 1: (0, 90, 255)}  # BGR per class id: smoke grey, fire orange


@dataclass
class DetectResult:
    out_dir: str
    images: int = 0
    unreadable: list[str] = field(default_factory=list)
    detections: int = 0
    alarms: int = 0
    conf: float = 0.0
    seconds: float = 0.0
    cameras: int = 0  # camera folders; with --sequence each is confirmed on its own
    warnings: list[str] = field(default_factory=list)
    tiles: int = 1  # tiled passes along the longer side (1: the whole frame only)
    masked: int = 0  # detections dropped in the cameras' masked regions
    alarm_rule: dict[str, Any] | None = None  # --sequence: the rule the alarms were raised under
    runtime: str = ""  # onnxruntime, openvino or ncnn

    def summary(self) -> str:
        bad = f" ({len(self.unreadable)} unreadable)" if self.unreadable else ""
        alarms = f", {self.alarms} alarm(s)" if self.alarms else ""
        cameras = f" from {self.cameras} camera(s)" if self.cameras > 1 else ""
        masked = f" ({self.masked} in masked regions, dropped)" if self.masked else ""
        return (
            f"{self.images} image(s){bad}{cameras}, {self.detections} detection(s) at conf {self.conf:g}{masked}"
            f"{alarms}, {self.seconds:.1f}s in {self.runtime}; {Path(self.out_dir) / DETECTIONS}"
        )


def expand_sources(sources: list[str], skip: Path | None = None) -> list[Path]:
    """Image files, folders (their images, recursively) and globs -> files in a stable order (name order per
    source, which is time order for frames named by time stamp or counter). A file named twice is taken once.
    Files a folder or glob would bring in from under ``skip`` (detect's own annotated copies from an earlier run)
    are left out; a source named inside ``skip`` itself stays in, for the no-overwrite check to refuse."""
    skipped = skip.resolve() if skip is not None else None

    def ours(p: Path) -> bool:
        return skipped is not None and skipped in p.resolve().parents

    files: list[Path] = []
    for source in sources:
        path = Path(source)
        found: list[Path]
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_frame(p))
        elif path.exists():
            found = [path]
        elif matches := sorted(glob.glob(source, recursive=True)):
            found = [Path(m) for m in matches if Path(m).is_file()]
        else:
            raise InputError(f"{source}: no such image, folder or glob match")
        named_inside = ours(path / "x") if path.is_dir() else ours(path)
        files += found if named_inside else [p for p in found if not ours(p)]
    seen: set[Path] = set()
    unique = [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]
    if not unique:
        raise InputError(f"no images under {', '.join(sources)} ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return unique


def check_thresholds(conf: float | None, iou: float, threads: int | None) -> None:
    """The values both entry points take (`wildfire-kd detect`, `wildfire-kd-edge`), checked in one place: a
    confidence outside 0..1 (or NaN) is a blind or deaf camera, an NMS IoU outside 0..1 keeps duplicates or breaks
    OpenCV's NMS."""
    if conf is not None and not 0.0 <= conf <= 1.0:
        raise InputError(f"--conf {conf}: a confidence threshold is between 0 and 1 (default: the model's own)")
    if not 0.0 <= iou <= 1.0:
        raise InputError(f"--iou {iou}: the NMS IoU threshold is between 0 and 1, e.g. 0.7")
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads}: at least 1 (or leave it out for the runtime's default)")


def cameras_of(files: list[Path]) -> dict[Path, list[Path]]:
    """Frames grouped by camera: the folder each frame lies in, frames in name (time) order within it."""
    cameras: dict[Path, list[Path]] = {}
    for f in files:
        cameras.setdefault(f.parent, []).append(f)
    return {camera: sorted(frames, key=lambda p: p.name) for camera, frames in cameras.items()}


def annotated_names(files: list[Path]) -> dict[Path, Path]:
    """Where each file's annotated copy goes under OUT/images/: its path below the sources' common folder, so
    `site1/frame.jpg` and `site2/frame.jpg` keep apart (one folder of frames: just the names)."""
    parents = [str(f.resolve().parent) for f in files]
    root = Path(os.path.commonpath(parents)) if parents else Path(".")
    return {f: f.resolve().relative_to(root) for f in files}


def _annotate(image, detections: list[Detection], alarmed: bool):
    import cv2

    for d in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in d.box)
        color = COLORS.get(d.class_id, (0, 255, 0))
        cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)
        label = f"{d.name} {d.confidence:.2f}"
        cv2.putText(image, label, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    if alarmed:
        cv2.putText(image, "ALARM", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2, cv2.LINE_AA)
    return image


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\rdetect: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _prepare_out(out: Path, save_images: bool) -> None:
    try:
        (out / ANNOTATED_DIR if save_images else out).mkdir(parents=True, exist_ok=True)
        (out / DETECTIONS).touch()
    except OSError as e:
        raise InputError(f"output folder {out} is not writable ({e.strerror}); pass a writable --out") from None


def detect(
    model_path: str | Path,
    sources: list[str],
    out: str | Path,
    conf: float | None = None,
    iou: float = DEFAULT_IOU,
    sequence: bool = False,
    alarm: dict[str, Any] | None = None,
    save_images: bool = False,
    threads: int | None = None,
    tiles: int = 1,
    runtime: str | None = None,
) -> DetectResult:
    """Run ``model_path`` over ``sources``; ``conf`` None = the operating point shipped in the file. With
    ``sequence`` each folder of frames is one camera, confirmed on its own under the alarm rule shipped in the file
    (else the default), with ``alarm``'s fields (AlarmRule's) in place of its own. A camera folder's mask
    (masks.py) drops the detections in its ignored regions; ``tiles`` > 1 adds tiled passes (CameraModel.detect)."""
    check_thresholds(conf, iou, threads)
    if tiles < 1:
        raise InputError(f"--tiles {tiles}: 1 (the whole frame only) or more")
    out = Path(out)
    files = expand_sources(sources, skip=out / ANNOTATED_DIR)
    owned = [out / DETECTIONS, out / ALERTS] + ([out / ANNOTATED_DIR] if save_images else [])
    refuse_overwriting_inputs(owned, [*files, model_path])
    model = CameraModel(model_path, threads=threads, runtime=runtime)
    rule = rule_with(model.alarm_rule, alarm) if sequence else None
    _prepare_out(out, save_images)
    result = DetectResult(str(out), conf=model.default_conf if conf is None else conf, tiles=tiles)
    result.runtime = model.runtime.runtime
    result.alarm_rule = rule.to_dict() if rule else None
    start = time.perf_counter()
    with (
        open(out / DETECTIONS, "w", encoding="utf-8") as log,
        open(out / ALERTS, "w", encoding="utf-8") if sequence else contextlib.nullcontext() as alerts,
    ):
        run = _Run(model, result, iou, log, alerts, out if save_images else None, annotated_names(files))
        cameras = cameras_of(files)
        result.cameras = len(cameras)
        for camera, frames in cameras.items() if sequence else [(None, files)]:
            run.camera(camera, frames, Confirmer(rule) if rule else None)
    result.seconds = time.perf_counter() - start
    if result.images == 0:
        raise InputError(f"none of the {len(files)} image(s) could be read: {', '.join(result.unreadable[:5])}")
    return result


class _Run:
    """One detect run's frames through the model, the masks, the log, the alarms and the annotated copies."""

    def __init__(self, model: CameraModel, result: DetectResult, iou: float, log, alerts, annotate_into, copies):
        self.model, self.result, self.iou, self.log, self.alerts = model, result, iou, log, alerts
        self.annotate_into, self.copies, self.done, self.total = annotate_into, copies, 0, len(copies)
        self.masks: dict[Path, CameraMask] = {}

    def _write(self, stream, row: dict) -> None:
        stream.write(json.dumps(row) + "\n")

    def _detections(self, path: Path, image, confirmer: Confirmer | None) -> tuple[list[Detection], list[Detection]]:
        """(the frame's detections at the confidence threshold, those the alarm logic sees: down to the rule's
        floor), both outside the camera's masked regions."""
        floor = confirmer.rule.floor if confirmer is not None and confirmer.rule.floor is not None else self.result.conf
        found = self.model.detect(image, conf=min(floor, self.result.conf), iou=self.iou, tiles=self.result.tiles)
        mask = self.masks.get(path.parent)
        if mask is None:  # once per camera folder (setdefault would read its mask files again for every frame)
            mask = self.masks[path.parent] = CameraMask(path.parent)
        found, masked = mask.keep(found, image.shape[1], image.shape[0])
        self.result.masked += masked
        return [d for d in found if d.confidence > self.result.conf], found

    def camera(self, camera: Path | None, frames: list[Path], confirmer: Confirmer | None) -> None:
        """Frames of one camera in time order (``confirmer`` None: single images, no alarms)."""
        import cv2

        size = None
        for path in frames:
            self.done += 1
            _progress(self.done, self.total)
            image = cv2.imread(str(path))  # None for a file OpenCV cannot decode
            if image is None:
                self.result.unreadable.append(str(path))
                self._write(self.log, {"file": str(path), "error": "unreadable image (OpenCV could not decode it)"})
                continue
            h, w = image.shape[:2]
            if confirmer is not None and size not in (None, (w, h)):  # another view: boxes no longer line up
                self.result.warnings.append(
                    f"{camera}: frame {path.name} is {w}x{h}, earlier frames {size[0]}x"
                    f"{size[1]}; alarm confirmation starts again from this frame"
                )
                confirmer = Confirmer(confirmer.rule)
            size = (w, h)
            detections, seen = self._detections(path, image, confirmer)
            self.result.images += 1
            self.result.detections += len(detections)
            row = {"file": str(path), "width": w, "height": h, "detections": [d.to_dict() for d in detections]}
            self._write(self.log, row)
            raised = confirmer.update(str(path), seen) if confirmer else []
            for alarm in raised:
                self._write(self.alerts, {"camera": str(camera), **alarm.to_dict()})
            self.result.alarms += len(raised)
            if self.annotate_into is not None:
                target = self.annotate_into / ANNOTATED_DIR / self.copies[path]
                target.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(target), _annotate(image, detections, bool(raised)))
