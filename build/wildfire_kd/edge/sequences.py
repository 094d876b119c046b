"""Camera sequences as data: a folder per sequence, its frames in time order, each with a time and whether smoke is
in view, the way camera networks publish them.

A sequence folder says it one of two ways (``frames.csv`` wins when both are there):

- ``frames.csv``: a header ``file,time,smoke`` and optionally ``x1,y1,x2,y2`` (the plume's box in frame pixels);
  ``time`` in seconds (any origin) or ISO 8601 (``2024-06-05T14:03:00``); ``smoke`` 0 or 1. Onset: the first frame
  with smoke.
- HPWREN's names, ``<unix seconds>_<±seconds from ignition>.jpg`` (e.g. ``1528221422_-00240.jpg``): smoke from
  ignition on, which is the onset.

Where the smoke is: the frames' boxes (frames.csv), or one region for the whole sequence in ``smoke.json``
(``{"region": [x1, y1, x2, y2]}``, frame pixels: draw it once around where the plume rises), used for every smoke frame
without a box of its own. An alarm is found on the fire only when it touches the smoke's box; a sequence with neither
is judged by its frame labels alone (any alarm after onset counts), and the figures say how many were.

A folder given as the sequences' root holds sequence folders, or is one sequence itself.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import InputError
from ..layout import MASK_IMAGE, SEQUENCE_FRAMES, SEQUENCE_SMOKE
from .letterbox import IMAGE_SUFFIXES

HPWREN_NAME = re.compile(r"^(\d{9,11})_([+-]\d+)$")  # <unix seconds>_<±seconds from ignition>
LEADING_TIME = re.compile(r"^(\d{9,11})(?:[_.-]|$)")  # a frame name that starts with its unix time
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
    def located(self) -> bool:
        """Where the smoke is is known (boxes or a region): an alarm elsewhere after onset is a false alarm."""
        return any(f.box is not None for f in self.frames if f.smoke)

    @property
    def interval(self) -> float:
        """Seconds between frames (the median gap): what one frame of watching stands for."""
        gaps = [b.time - a.time for a, b in zip(self.frames, self.frames[1:], strict=False) if b.time > a.time]
        return statistics.median(gaps) if gaps else DEFAULT_INTERVAL_S


def _time(text: str | None, where: str) -> float:
    try:
        value = float(text or "")
    except ValueError:
        try:
            value = datetime.fromisoformat((text or "").strip()).timestamp()
        except ValueError:
            raise InputError(f"{where}: time {text!r} is neither seconds nor ISO 8601 (2024-06-05T14:03:00)") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: time {text!r} is not a finite number of seconds")
    return value


def _box(row: dict, where: str) -> tuple[float, float, float, float] | None:
    """The row's plume box (x1, y1, x2, y2 in frame pixels), None when it gives none; a box that is not numbers,
    not finite, or inverted is bad input naming the line."""
    cells = [(row.get(k) or "").strip() for k in ("x1", "y1", "x2", "y2")]
    if not any(cells):
        return None
    try:
        box = tuple(float(c) for c in cells)
    except ValueError:
        raise InputError(f"{where}: the box {cells} is not four numbers (x1, y1, x2, y2 in frame pixels)") from None
    if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"{where}: the box {list(box)} is not a box with x1 < x2 and y1 < y2 (frame pixels)")
    return box


def _rows(path: Path) -> list[dict]:
    """frames.csv's rows (a byte-order mark allowed); bytes that are not UTF-8, a missing column, or a row shorter
    than the header are bad input naming the line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 CSV") from None
    needed = {"file", "time", "smoke"}
    if not needed <= {h.strip() for h in header}:
        raise InputError(f"{path}: its header is {header}; it needs file, smoke and time (and optionally x1,y1,x2,y2)")
    if not rows:
        raise InputError(f"{path}: a header and no frames: add a row per frame (file,time,smoke)")
    for n, row in enumerate(rows, 2):  # csv fills a short row's missing cells with None, keeps extra ones under None
        missing = [k for k in header if k.strip() in needed and row.get(k) is None]
        if missing or None in row:
            what = f"no {', '.join(missing)}" if missing else f"more cells than the header's {len(header)} columns"
            raise InputError(f"{path}:{n}: {what}; each row is file,time,smoke[,x1,y1,x2,y2]")
    return [{k.strip(): (v or "") for k, v in row.items()} for row in rows]


def _from_csv(folder: Path) -> Sequence:
    path = folder / SEQUENCE_FRAMES
    frames = []
    for n, row in enumerate(_rows(path), 2):
        where = f"{path}:{n}"
        image = folder / row["file"].strip()
        if not row["file"].strip() or not image.is_file():
            raise InputError(f"{where}: no frame {image}")
        if row["smoke"].strip() not in ("0", "1"):
            raise InputError(f"{where}: smoke is {row['smoke']!r}; write 0 or 1")
        frames.append(Frame(image, _time(row["time"], where), row["smoke"].strip() == "1", _box(row, where)))
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


def _region(folder: Path) -> tuple[float, float, float, float] | None:
    """The sequence's smoke region (smoke.json), if it has one."""
    path = folder / SEQUENCE_SMOKE
    if not path.is_file():
        return None
    try:
        box = tuple(float(v) for v in json.loads(path.read_text(encoding="utf-8"))["region"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        hint = 'write {"region": [x1, y1, x2, y2]}'
        raise InputError(f"{path}: not a smoke region ({type(e).__name__}: {e}); {hint}") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"{path}: region {list(box)} is not a box x1 < x2, y1 < y2 in the frame's pixels")
    return box


def name_time(name: str) -> float | None:
    """The unix time a frame's name starts with (HPWREN's, a camera's time-stamped snapshots), if any."""
    found = LEADING_TIME.match(Path(name).stem)
    return float(found.group(1)) if found else None


def is_sequence(folder: Path) -> bool:
    """A camera folder that says its frames' times: a frames.csv, or frames all named as HPWREN names them."""
    if (folder / SEQUENCE_FRAMES).is_file():
        return True
    frames = frame_files(folder) if folder.is_dir() else []
    return bool(frames) and all(HPWREN_NAME.match(f.stem) for f in frames)


def load_sequence(folder: Path) -> Sequence:
    listed = (folder / SEQUENCE_FRAMES).is_file()
    sequence = _from_csv(folder) if listed else _from_names(folder, frame_files(folder))
    if not sequence.frames:
        raise InputError(f"{folder}: a sequence without frames")
    region = _region(folder)
    if region is not None:
        sequence.frames = [Frame(f.path, f.time, f.smoke, f.box or region) if f.smoke else f for f in sequence.frames]
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
