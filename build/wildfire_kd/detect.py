"""`wildfire-kd detect` / `wildfire-kd-edge`: run student.onnx over image files as a camera does.

numpy, onnxruntime and OpenCV only (see camera.py). Writes OUT/detections.jsonl (one line per image: file, size,
detections, or the error that made it unreadable), with --sequence OUT/alerts.jsonl (temporally confirmed
alarms), with --save-images annotated copies in OUT/images/. An unreadable image is reported and the rest go
on; only when nothing could be read is it an error (exit 2). `wildfire-kd-edge` is the same without the full
CLI's config file: the edge image ships numpy, onnxruntime and OpenCV, not typer or pydantic.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .camera import ALARM_IOU, ALARM_K, ALARM_N, DEFAULT_IOU, CameraModel, Confirmer, Detection
from .errors import InputError, WildfireKDError
from .letterbox import IMAGE_SUFFIXES

DETECTIONS_NAME = "detections.jsonl"
ALERTS_NAME = "alerts.jsonl"
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
            f"{self.seconds:.1f}s; {Path(self.out_dir) / DETECTIONS_NAME}"
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


def _annotate(image, detections: list[Detection], alarmed: bool):
    import cv2

    for d in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in d.box)
        color = COLORS.get(d.class_id, (0, 255, 0))
        cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)
        cv2.putText(
            image,
            f"{d.name} {d.confidence:.2f}",
            (x1, max(y1 - 4, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            color,
            1,
            cv2.LINE_AA,
        )
    if alarmed:
        cv2.putText(image, "ALARM", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2, cv2.LINE_AA)
    return image


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\rdetect: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def detect(
    onnx_path: str | Path,
    sources: list[str],
    out: str | Path,
    conf: float | None = None,
    iou: float = DEFAULT_IOU,
    sequence: bool = False,
    confirmer: Confirmer | None = None,
    save_images: bool = False,
    threads: int | None = None,
) -> DetectResult:
    """Run ``onnx_path`` over ``sources``; ``conf`` None = the operating point shipped in the file."""
    import cv2

    model = CameraModel(onnx_path, threads=threads)
    files = expand_sources(sources)
    out = Path(out)
    try:
        (out / "images" if save_images else out).mkdir(parents=True, exist_ok=True)
        (out / DETECTIONS_NAME).touch()
    except OSError as e:
        raise InputError(f"output folder {out} is not writable ({e.strerror}); pass a writable --out") from None
    confirmer = (confirmer or Confirmer()) if sequence else None
    result = DetectResult(str(out), conf=model.default_conf if conf is None else conf)
    start = time.perf_counter()
    with (
        open(out / DETECTIONS_NAME, "w", encoding="utf-8") as log,
        open(out / ALERTS_NAME, "w", encoding="utf-8") if sequence else _NoFile() as alerts,
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
            log.write(
                json.dumps(
                    {"file": str(path), "width": w, "height": h, "detections": [d.to_dict() for d in detections]}
                )
                + "\n"
            )
            raised = confirmer.update(str(path), detections) if confirmer else []
            for alarm in raised:
                alerts.write(json.dumps(alarm.to_dict()) + "\n")
            result.alarms += len(raised)
            if save_images:
                cv2.imwrite(str(out / "images" / path.name), _annotate(image, detections, bool(raised)))
            _progress(i, len(files))
    result.seconds = time.perf_counter() - start
    if result.images == 0:
        raise InputError(f"none of the {len(files)} image(s) could be read: {', '.join(result.unreadable[:5])}")
    return result


class _NoFile:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main(argv: list[str] | None = None) -> int:
    """`wildfire-kd-edge`: detect for the edge image (argparse; numpy, onnxruntime and OpenCV only)."""
    parser = argparse.ArgumentParser(prog="wildfire-kd-edge", description="Run student.onnx over images as a camera.")
    parser.add_argument("sources", nargs="+", help="images, folders or globs")
    parser.add_argument("--onnx", required=True, help="student.onnx from `wildfire-kd export`")
    parser.add_argument("--conf", type=float, default=None, help="confidence threshold (default: the model's own)")
    parser.add_argument("--iou", type=float, default=DEFAULT_IOU, help="NMS IoU threshold")
    parser.add_argument("--out", default="detections", help="folder for detections.jsonl / alerts.jsonl")
    parser.add_argument("--sequence", action="store_true", help="frames of one camera in time order: raise alarms")
    parser.add_argument("--alarm-k", type=int, default=ALARM_K, help="alarm when confirmed in k ...")
    parser.add_argument("--alarm-n", type=int, default=ALARM_N, help="... of the last n frames")
    parser.add_argument("--alarm-iou", type=float, default=ALARM_IOU, help="overlap that counts as the same object")
    parser.add_argument("--save-images", action="store_true", help="also write annotated copies")
    args = parser.parse_args(argv)
    try:
        confirmer = Confirmer(args.alarm_k, args.alarm_n, args.alarm_iou)
        result = detect(
            args.onnx,
            args.sources,
            args.out,
            conf=args.conf,
            iou=args.iou,
            sequence=args.sequence,
            confirmer=confirmer,
            save_images=args.save_images,
        )
    except WildfireKDError as e:
        print(f"wildfire-kd-edge: error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a bug, not the input: one line and exit 3, as the full CLI does
        if os.environ.get("WILDFIRE_KD_DEBUG") == "1":
            raise
        print(
            f"wildfire-kd-edge: internal error (a bug, not your input): {type(e).__name__}: {e}; "
            "WILDFIRE_KD_DEBUG=1 shows the traceback",
            file=sys.stderr,
        )
        return 3
    print(f"detect: {result.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
