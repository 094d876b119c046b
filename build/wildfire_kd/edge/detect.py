"""`detect`: run a model file over image files as a camera does (numpy, OpenCV and its runtime only).

Writes OUT/detections.jsonl (one line per image: file, size, detections, or the error that made it unreadable), with
``sequence`` OUT/alerts.jsonl (temporally confirmed alarms), with ``save_images`` annotated copies in OUT/images/.
An unreadable image is reported and the rest go on; only when nothing could be read is it an error (exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..guard import (
    atomic_file,
    atomic_write_text,
    disk_full,
    lock_folder,
    refuse_overwriting_inputs,
    releases_its_locks,
)
from ..layout import ALERTS, ANNOTATED_DIR, DETECTIONS, SEQUENCE_FRAMES, STATIC_MEMORY
from .alarms import rule_with
from .boxes import DEFAULT_IOU, Detection
from .camera import CameraPath, CameraSettings
from .events import EventRule
from .letterbox import IMAGE_SUFFIXES
from .masks import CameraMask
from .model import AUTO, MAX_TILES, CameraModel
from .sequences import DEFAULT_INTERVAL_S, frame_files, is_frame, is_sequence, load_sequence, name_time
from .static import StaticMemory, StaticRule

COLORS = {0: (160, 160, 160), 1: (0, 90, 255)}  # BGR per class id: smoke grey, fire orange


@dataclass
class DetectResult:
    out_dir: str
    images: int = 0
    unreadable: list[str] = field(default_factory=list)
    detections: int = 0
    alarms: int = 0  # alarms the rule raised (with --sequence)
    conf: float = 0.0
    seconds: float = 0.0
    cameras: int = 0  # camera folders; with --sequence each is confirmed on its own
    warnings: list[str] = field(default_factory=list)
    tiles: dict[str, Any] = field(default_factory=dict)  # tiles per frame size, and where that number came from
    masked: int = 0  # detections dropped in the cameras' masked regions
    alarm_rule: dict[str, Any] | None = None  # --sequence: the rule the alarms were raised under
    camera: dict[str, Any] | None = None  # --sequence: the camera path (static suppression, events)
    runtime: str = ""  # onnxruntime, openvino or ncnn
    suppressed: int = 0  # detections static suppression took (--sequence)
    events: dict[str, int] = field(default_factory=dict)  # alerts by status: opened, updated, closed

    def summary(self) -> str:
        bad = f" ({len(self.unreadable)} unreadable)" if self.unreadable else ""
        cameras = f" from {self.cameras} camera(s)" if self.cameras > 1 else ""
        masked = f" ({self.masked} in masked regions, dropped)" if self.masked else ""
        static = f", {self.suppressed} suppressed as static" if self.suppressed else ""
        alarms = ""
        if self.alarm_rule is not None:
            opened = self.events.get("opened", 0)
            alarms = f", {self.alarms} alarm(s) in {opened} event(s)" if self.alarms else ", no alarm"
        tiles = "; ".join(f"{t['tiles']} tile(s) on {size} frames ({t['source']})" for size, t in self.tiles.items())
        return (
            f"{self.images} image(s){bad}{cameras}, {self.detections} detection(s) at conf {self.conf:g}{masked}"
            f"{static}{alarms}, {self.seconds:.1f}s in {self.runtime}; {tiles or 'no frame read'}; "
            f"{Path(self.out_dir) / DETECTIONS}"
        )


def expand_sources(sources: list[str], skip: Path | None = None) -> list[Path]:
    """Image files, folders (their images, recursively) and globs -> files in a stable order (name order per
    source, which is time order for frames named by time stamp or counter). A file named twice is taken once.
    Files a folder or glob would bring in from detect's own annotated copies (``skip``, this run's OUT/images, or
    any earlier run's: an images/ folder beside a detections.jsonl) are left out: however often detect runs with its
    output inside the frames, it never reads its own copies back; a source named inside them itself stays in, for
    the no-overwrite check to refuse."""
    skipped = _resolved(skip) if skip is not None else None
    outputs: dict[Path, bool] = {}

    def detect_output(folder: Path) -> bool:  # an OUT/images of detect (cached per folder)
        if folder not in outputs:
            outputs[folder] = folder.name == ANNOTATED_DIR and (folder.parent / DETECTIONS).is_file()
        return outputs[folder]

    def ours(p: Path) -> bool:
        parents = _resolved(p).parents
        return (skipped is not None and skipped in parents) or any(detect_output(d) for d in parents)

    files: list[Path] = []
    for source in sources:
        path = Path(source)
        found: list[Path]
        if path.is_dir():
            try:
                found = sorted(p for p in path.rglob("*") if is_frame(p))
            except OSError as e:
                raise InputError(f"{source}: cannot be listed ({e.strerror}: {e.filename})") from None
        elif path.exists():
            found = [path]
        elif matches := sorted(glob.glob(source, recursive=True)):
            found = [Path(m) for m in matches if Path(m).is_file()]
        else:
            raise InputError(f"{source}: no such image, folder or glob match")
        named_inside = ours(path / "x") if path.is_dir() else ours(path)
        files += found if named_inside else [p for p in found if not ours(p)]
    seen: set[Path] = set()
    unique = [f for f in files if not (_resolved(f) in seen or seen.add(_resolved(f)))]
    if not unique:
        raise InputError(f"no images under {', '.join(sources)} ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return unique


MAX_THREADS = 256  # --threads at most: beyond the cores of any camera box, a runtime only thrashes (or hangs)


def check_thresholds(conf: float | None, iou: float, threads: int | None, tiles: int | str | None = None) -> None:
    """The values both entry points take (`wildfire-kd detect`, `wildfire-kd-edge`), checked in one place: a
    confidence outside 0..1 (or NaN) is a blind or deaf camera, an NMS IoU outside 0..1 keeps duplicates or breaks
    OpenCV's NMS, threads and tiles past their bounds make a camera hang."""
    if conf is not None and not 0.0 <= conf <= 1.0:
        raise InputError(f"--conf {conf}: a confidence threshold is between 0 and 1 (default: the model's own)")
    if not 0.0 <= iou <= 1.0:
        raise InputError(f"--iou {iou}: the NMS IoU threshold is between 0 and 1, e.g. 0.7")
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise InputError(f"--threads {threads}: 1 to {MAX_THREADS} (or leave it out for the runtime's default)")
    if tiles is not None and tiles != AUTO and not (isinstance(tiles, int) and 1 <= tiles <= MAX_TILES):
        raise InputError(
            f"--tiles {tiles}: 1 (the whole frame only) to {MAX_TILES}, or '{AUTO}' (by the frame's size); a frame "
            "gets no more tiles than leave each a quarter of the model's input at least"
        )


def _resolved(path: Path) -> Path:
    """``path`` resolved; a symlink loop is bad input (exit 2), not a crash."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:
        raise InputError(f"{path}: cannot be followed ({e}); a symlink loop? point at the frames themselves") from None


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
    """OUT created and taken for this run (one run at a time: guard.lock_folder)."""
    try:
        (out / ANNOTATED_DIR if save_images else out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if disk_full(e, out) is None:
            raise InputError(f"output folder {out} is not writable ({e.strerror}); pass a writable --out") from None
        raise
    lock_folder(out)


@releases_its_locks
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
    tiles: int | str | None = None,
    runtime: str | None = None,
    static: bool = True,
    events: bool = True,
    static_memory: str | Path | None = None,
    learn_static: str | Path | None = None,
) -> DetectResult:
    """Run ``model_path`` over ``sources``; ``conf`` None = the operating point shipped in the file; ``tiles`` None =
    the file's camera profile, else automatic by the frame's size (model.py). With ``sequence`` each folder of frames
    is one camera, its frames in time order (its frames.csv or HPWREN names, else name order a minute apart), through
    the camera path (camera.py): static suppression (``static``; the memory read from ``static_memory`` when it
    exists, seeded from ``learn_static``'s smoke-free frames, written to OUT/static_memory.json and back to
    ``static_memory``), the alarm rule shipped in the file (else the default) with ``alarm``'s fields in place of its
    own, and one event per fire (``events``). A camera folder's mask (masks.py) drops detections in its ignored
    regions."""
    check_thresholds(conf, iou, threads, tiles)
    out = Path(out)
    files = expand_sources(sources, skip=out / ANNOTATED_DIR)
    owned = [out / DETECTIONS, out / ALERTS, out / STATIC_MEMORY] + ([out / ANNOTATED_DIR] if save_images else [])
    refuse_overwriting_inputs(owned, [*files, model_path])
    model = CameraModel(model_path, threads=threads, runtime=runtime)
    settings = _camera_settings(model, alarm, static, events) if sequence else None
    memories = read_memories(static_memory) if settings and settings.static else {}
    _prepare_out(out, save_images)
    result = DetectResult(str(out), conf=model.default_conf if conf is None else conf)
    result.runtime = model.runtime.runtime
    result.alarm_rule = settings.rule.to_dict() if settings else None
    result.camera = settings.to_dict() if settings else None
    start = time.perf_counter()
    # each written beside its final name and renamed over it at the end: a run that fails (a full disk, a kill)
    # leaves the previous complete detections.jsonl and alerts.jsonl as they were
    with (
        atomic_file(out / DETECTIONS) as detections_tmp,
        atomic_file(out / ALERTS) if sequence else contextlib.nullcontext() as alerts_tmp,
        open(detections_tmp, "w", encoding="utf-8") as log,
        open(alerts_tmp, "w", encoding="utf-8") if sequence else contextlib.nullcontext() as alerts,
    ):
        run = _Run(model, result, iou, tiles, log, alerts, out if save_images else None, annotated_names(files))
        result.cameras = len(cameras_of(files))
        if settings is None:
            run.camera(None, [(f, 0.0) for f in files], None)
        else:
            _cameras(run, files, settings, memories, Path(learn_static) if learn_static is not None else None)
    result.seconds = time.perf_counter() - start
    if memories:
        write_memories(memories, out / STATIC_MEMORY, static_memory)
    if result.images == 0:
        raise InputError(f"none of the {len(files)} image(s) could be read: {', '.join(result.unreadable[:5])}")
    return result


def _camera_settings(model: CameraModel, alarm: dict[str, Any] | None, static: bool, events: bool) -> CameraSettings:
    """The camera path of ``detect --sequence``: the model's alarm rule (else the default) with ``alarm``'s fields."""
    return CameraSettings(rule_with(model.alarm_rule, alarm), StaticRule() if static else None,
                          EventRule() if events else None)  # fmt: skip


def _cameras(
    run: _Run, files: list[Path], settings: CameraSettings, memories: dict[str, StaticMemory], learn: Path | None
) -> None:
    """Each camera folder through its own camera path; its static memory ends in ``memories``."""
    cameras = cameras_of(files)
    for camera, frames in cameras.items():
        path = CameraPath(str(camera), settings, memories.get(str(camera)))
        timed = timed_frames(camera, frames, run.result)
        if learn is not None and path.memory is not None and timed:
            run.learn(path, camera_history(learn, camera, len(cameras)), before=timed[0][1])
        run.camera(camera, timed, path)
        if path.memory is not None:
            memories[str(camera)] = path.memory


def timed_frames(camera: Path, frames: list[Path], result: DetectResult) -> list[tuple[Path, float]]:
    """A camera's frames in time order with their times (seconds): as its sequence says (frames.csv, HPWREN names;
    sequences.py, as validate reads it), else by the unix times their names start with (as the service reads them),
    else in name order a minute apart. Frames a frames.csv leaves out are left out, with a warning."""
    try:
        listed = load_sequence(camera) if is_sequence(camera) else None
    except InputError as e:
        result.warnings.append(f"{camera}: {e}; its frames are taken in name order, a minute apart")
        listed = None
    if listed is None:
        times = [name_time(f.name) for f in frames]
        if all(t is not None for t in times):  # time-stamped names (as the service reads a drop folder's)
            return sorted(zip(frames, times, strict=True), key=lambda pair: pair[1])
        return [(f, i * DEFAULT_INTERVAL_S) for i, f in enumerate(frames)]
    given = {f.resolve() for f in frames}
    ordered = [(f.path, f.time) for f in listed.frames if f.path.resolve() in given]
    left_out = len(frames) - len(ordered)
    if left_out:
        result.warnings.append(f"{camera}: {left_out} frame(s) not in its {SEQUENCE_FRAMES}, left out")
    return ordered


def camera_history(folder: Path, camera: Path, cameras: int) -> list[Path]:
    """A camera's smoke-free frames to learn its static spots from: ``folder``/<its folder's name>/, or ``folder``
    itself when it holds frames and there is one camera."""
    own = folder / camera.name
    if own.is_dir():
        return frame_files(own)
    if cameras == 1 and folder.is_dir() and frame_files(folder):
        return frame_files(folder)
    raise InputError(
        f"--learn-static {folder}: no folder {own.name}/ of smoke-free frames for camera {camera} (one sub-folder per "
        "camera, named as its folder of frames; or the frames themselves when there is one camera)"
    )


def read_memories(path: str | Path | None) -> dict[str, StaticMemory]:
    """Each camera's static memory from ``path`` (a file `detect` wrote), or none when it does not exist yet."""
    if path is None or not Path(path).exists():
        return {}
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"--static-memory {path}: not readable JSON ({e}); pass a file detect wrote") from None
    if not isinstance(raw, dict):
        raise InputError(f"--static-memory {path}: not a file of static memories (a mapping camera -> memory)")
    return {camera: StaticMemory.from_dict(memory, f"{path}: camera {camera}") for camera, memory in raw.items()}


def write_memories(memories: dict[str, StaticMemory], out: Path, back_to: str | Path | None) -> None:
    text = json.dumps({camera: memory.to_dict() for camera, memory in memories.items()}, indent=1) + "\n"
    for target in {out, Path(back_to)} if back_to is not None else {out}:
        atomic_write_text(target, text)


def _write_image(target: Path, image) -> None:
    """An annotated copy, written beside its name and renamed over it: never half an image. OpenCV says only that it
    could not write: the disk is the usual reason (guard.disk_full tells)."""
    import cv2

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")  # the suffix tells OpenCV the format
    if not cv2.imwrite(str(tmp), image):
        tmp.unlink(missing_ok=True)
        raise OSError(errno.EIO, "OpenCV could not write the annotated copy", str(target))
    os.replace(tmp, target)


class _Run:
    """One detect run's frames through the model, the masks, the log, the camera path and the annotated copies."""

    def __init__(self, model: CameraModel, result: DetectResult, iou: float, tiles, log, alerts, annotate_into, copies):
        self.model, self.result, self.iou, self.tiles, self.log, self.alerts = model, result, iou, tiles, log, alerts
        self.annotate_into, self.copies, self.done, self.total = annotate_into, copies, 0, len(copies)
        self.masks: dict[Path, CameraMask] = {}

    def _write(self, stream, row: dict) -> None:
        stream.write(json.dumps(row) + "\n")

    def _detections(self, path: Path, image, floor: float) -> list[Detection]:
        """The frame's detections down to ``floor``, outside the camera's masked regions."""
        h, w = image.shape[:2]
        tiles, source = self.model.tiles_for(w, h, self.tiles)
        self.result.tiles.setdefault(f"{w}x{h}", {"tiles": tiles, "source": source})
        found = self.model.detect(image, conf=floor, iou=self.iou, tiles=tiles)
        mask = self.masks.get(path.parent)
        if mask is None:  # once per camera folder (setdefault would read its mask files again for every frame)
            mask = self.masks[path.parent] = CameraMask(path.parent)
        found, masked = mask.keep(found, w, h)
        self.result.masked += masked
        return found

    def learn(self, path: CameraPath, history: list[Path], before: float) -> None:
        """The camera's smoke-free frames, taken as the minutes ``before`` its first frame: every detection in them
        is a static spot to suppress."""
        import cv2

        floor = min(self._floor(path), self.result.conf)
        for i, frame in enumerate(history):
            image = cv2.imread(str(frame))
            if image is not None:
                when = before - (len(history) - i) * DEFAULT_INTERVAL_S
                path.memory.learn(when, self._detections(frame, image, floor))

    def _floor(self, path: CameraPath | None) -> float:
        rule = path.settings.rule if path is not None else None
        return rule.floor if rule is not None and rule.floor is not None else self.result.conf

    def camera(self, camera: Path | None, frames: list[tuple[Path, float]], path: CameraPath | None) -> None:
        """Frames of one camera in time order (``path`` None: single images, no alarms)."""
        import cv2

        size = None
        for frame, when in frames:
            self.done += 1
            _progress(self.done, self.total)
            image = cv2.imread(str(frame))  # None for a file OpenCV cannot decode
            if image is None:
                self.result.unreadable.append(str(frame))
                self._write(self.log, {"file": str(frame), "error": "unreadable image (OpenCV could not decode it)"})
                continue
            h, w = image.shape[:2]
            if path is not None and size not in (None, (w, h)):  # another view: boxes no longer line up
                self.result.warnings.append(
                    f"{camera}: frame {frame.name} is {w}x{h}, earlier frames {size[0]}x"
                    f"{size[1]}; alarm confirmation starts again from this frame"
                )
                path.new_view()
            size = (w, h)
            found = self._detections(frame, image, min(self._floor(path), self.result.conf))
            self._frame(camera, frame, when, image, found, path)

    def _frame(self, camera, frame: Path, when: float, image, found: list[Detection], path: CameraPath | None) -> None:

        conf = self.result.conf
        outcome = path.frame(str(frame), when, found) if path is not None else None
        suppressed = [s for s in outcome.suppressed if s.detection.confidence > conf] if outcome else []
        taken = {id(s.detection) for s in suppressed}
        detections = [d for d in found if d.confidence > conf and id(d) not in taken]
        self.result.images += 1
        self.result.detections += len(detections)
        h, w = image.shape[:2]
        row = {"file": str(frame), "width": w, "height": h, "detections": [d.to_dict() for d in detections]}
        if outcome is not None:
            row["time"] = when
            row["suppressed"] = [s.to_dict() for s in suppressed]
            self.result.suppressed += len(outcome.suppressed)
            self.result.alarms += len(outcome.alarms)
            for alert in outcome.alerts:
                self._write(self.alerts, alert.to_dict())
                self.result.events[alert.status] = self.result.events.get(alert.status, 0) + 1
        self._write(self.log, row)
        if self.annotate_into is not None:
            target = self.annotate_into / ANNOTATED_DIR / self.copies[frame]
            _write_image(target, _annotate(image, detections, bool(outcome and outcome.alarms)))
