"""`detect`: run a model file over image files as a camera does (numpy, onnxruntime and OpenCV only).

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

from ..errors import InputError
from ..layout import ALERTS, ANNOTATED_DIR, DETECTIONS
from .alarms import Confirmer
from .boxes import DEFAULT_IOU
from .letterbox import IMAGE_SUFFIXES
from .model import CameraModel, Detection

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

    def summary(self) -> str:
        bad = f" ({len(self.unreadable)} unreadable)" if self.unreadable else ""
        alarms = f", {self.alarms} alarm(s)" if self.alarms else ""
        return (
            f"{self.images} image(s){bad}, {self.detections} detection(s) at conf {self.conf:g}{alarms}, "
            f"{self.seconds:.1f}s; {Path(self.out_dir) / DETECTIONS}"
        )


def expand_sources(sources: list[str]) -> list[Path]:
    """Image files, folders (their images, recursively) and globs -> files in a stable order (name order per
    source, which is time order for frames named by time stamp or counter)."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            files.append(path)
        elif matches := sorted(glob.glob(source, recursive=True)):
            files += [Path(m) for m in matches if Path(m).is_file()]
        else:
            raise InputError(f"{source}: no such image, folder or glob match")
    if not files:
        raise InputError(f"no images under {', '.join(sources)} ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


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
    confirmer: Confirmer | None = None,
    save_images: bool = False,
    threads: int | None = None,
) -> DetectResult:
    """Run ``model_path`` over ``sources``; ``conf`` None = the operating point shipped in the file."""
    import cv2

    model = CameraModel(model_path, threads=threads)
    files = expand_sources(sources)
    out = Path(out)
    _prepare_out(out, save_images)
    copies = annotated_names(files) if save_images else {}
    confirmer = (confirmer or Confirmer()) if sequence else None
    result = DetectResult(str(out), conf=model.default_conf if conf is None else conf)
    start = time.perf_counter()
    with (
        open(out / DETECTIONS, "w", encoding="utf-8") as log,
        open(out / ALERTS, "w", encoding="utf-8") if sequence else contextlib.nullcontext() as alerts,
    ):
        for i, path in enumerate(files, 1):
            image = cv2.imread(str(path))  # None for a file OpenCV cannot decode
            if image is None:
                result.unreadable.append(str(path))
                log.write(json.dumps({"file": str(path), "error": "unreadable image (OpenCV could not decode it)"}))
                log.write("\n")
                _progress(i, len(files))
                continue
            detections = model.detect(image, conf=result.conf, iou=iou)
            result.images += 1
            result.detections += len(detections)
            h, w = image.shape[:2]
            row = {"file": str(path), "width": w, "height": h, "detections": [d.to_dict() for d in detections]}
            log.write(json.dumps(row) + "\n")
            raised = confirmer.update(str(path), detections) if confirmer else []
            for alarm in raised:
                alerts.write(json.dumps(alarm.to_dict()) + "\n")
            result.alarms += len(raised)
            if save_images:
                target = out / ANNOTATED_DIR / copies[path]
                target.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(target), _annotate(image, detections, bool(raised)))
            _progress(i, len(files))
    result.seconds = time.perf_counter() - start
    if result.images == 0:
        raise InputError(f"none of the {len(files)} image(s) could be read: {', '.join(result.unreadable[:5])}")
    return result
