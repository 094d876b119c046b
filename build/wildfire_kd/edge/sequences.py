"""Camera sequences as data: a folder per sequence, its frames in time order, each with a time and whether smoke is
in view, the way camera networks publish them.

A sequence folder says it one of two ways (``frames.csv`` wins when both are there):

- ``frames.csv``: a header ``file,time,smoke`` and optionally ``x1,y1,x2,y2`` (the plume's box in frame pixels);
  ``time`` in seconds (any origin) or ISO 8601 (``2024-06-05T14:03:00``); ``smoke`` 0 or 1. Onset: the first frame
  with smoke.
- HPWREN's names, ``<unix seconds>_<±seconds from ignition>.jpg`` (e.g. ``1528221422_-00240.jpg``): smoke from
  ignition on, which is the onset.

A folder given as the sequences' root holds sequence folders, or is one sequence itself.
"""

from __future__ import annotations

import csv
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import InputError
from ..layout import MASK_IMAGE, SEQUENCE_FRAMES
from .letterbox import IMAGE_SUFFIXES

HPWREN_NAME = re.compile(r"^(\d{9,11})_([+-]\d+)$")  # <unix seconds>_<±seconds from ignition>
DEFAULT_INTERVAL_S = 60.0  # a tower camera's frame every minute (HPWREN, Pyronear); used for a one-frame sequence


@dataclass(frozen=True)
class Frame:
    path: Path
    time: float  # seconds
    smoke: bool
    box: tuple[float, float, float, float] | None = None  # the plume in frame pixels, when known


@dataclass
class Sequence:
    name: str  # the camera sequence's folder name: its camera id in reports
    folder: Path
    frames: list[Frame] = field(default_factory=list)
    onset: float | None = None  # time smoke appears (ignition for HPWREN names); None: a smoke-free sequence

    @property
    def positive(self) -> bool:
        return self.onset is not None

    @property
    def interval(self) -> float:
        """Seconds between frames (the median gap): what one frame of watching stands for."""
        gaps = [b.time - a.time for a, b in zip(self.frames, self.frames[1:], strict=False) if b.time > a.time]
        return statistics.median(gaps) if gaps else DEFAULT_INTERVAL_S


def _time(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise InputError(f"{where}: time {text!r} is neither seconds nor ISO 8601 (2024-06-05T14:03:00)") from None


def _from_csv(folder: Path) -> Sequence:
    path = folder / SEQUENCE_FRAMES
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    needed = {"file", "time", "smoke"}
    if not rows or not needed <= set(rows[0]):
        raise InputError(f"{path}: needs a header with {', '.join(sorted(needed))} (and optionally x1,y1,x2,y2)")
    frames = []
    for n, row in enumerate(rows, 2):
        where = f"{path}:{n}"
        image = folder / row["file"]
        if not image.is_file():
            raise InputError(f"{where}: no frame {image}")
        if row["smoke"].strip() not in ("0", "1"):
            raise InputError(f"{where}: smoke is {row['smoke']!r}; write 0 or 1")
        box = None
        if all((row.get(k) or "").strip() for k in ("x1", "y1", "x2", "y2")):
            box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        frames.append(Frame(image, _time(row["time"], where), row["smoke"].strip() == "1", box))
    frames.sort(key=lambda f: f.time)
    onset = next((f.time for f in frames if f.smoke), None)
    return Sequence(folder.name, folder, frames, onset)


def _from_names(folder: Path, images: list[Path]) -> Sequence:
    frames, ignitions = [], set()
    for image in images:
        found = HPWREN_NAME.match(image.stem)
        if not found:
            raise InputError(
                f"{image}: not a sequence frame: name it <unix seconds>_<±seconds from ignition>.jpg (HPWREN), or "
                f"give the folder a {SEQUENCE_FRAMES} (file,time,smoke)"
            )
        unix, offset = int(found.group(1)), int(found.group(2))
        ignitions.add(unix - offset)
        frames.append(Frame(image, float(unix), offset >= 0))
    frames.sort(key=lambda f: f.time)
    onset = float(min(ignitions)) if any(f.smoke for f in frames) else None
    return Sequence(folder.name, folder, frames, onset)


def is_frame(path: Path) -> bool:
    """An image file that is a camera frame (a camera folder's mask.png is its setting, not a frame)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and path.name != MASK_IMAGE


def frame_files(folder: Path) -> list[Path]:
    """The frames of a camera's folder, in name order."""
    return sorted(p for p in folder.iterdir() if is_frame(p))


def load_sequence(folder: Path) -> Sequence:
    listed = (folder / SEQUENCE_FRAMES).is_file()
    sequence = _from_csv(folder) if listed else _from_names(folder, frame_files(folder))
    if not sequence.frames:
        raise InputError(f"{folder}: a sequence without frames")
    return sequence


def load_sequences(root: str | Path) -> list[Sequence]:
    """The sequences under ``root``: its sub-folders that hold frames (in name order), or ``root`` itself."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of camera sequences")

    def holds_frames(folder: Path) -> bool:
        return (folder / SEQUENCE_FRAMES).is_file() or bool(frame_files(folder))

    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and holds_frames(d)]
    if not folders and holds_frames(root):
        folders = [root]
    if not folders:
        raise InputError(
            f"{root}: no camera sequences in it (folders of frames with {SEQUENCE_FRAMES} or HPWREN names)"
        )
    return [load_sequence(folder) for folder in folders]
