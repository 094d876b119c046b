"""`CameraModel`: a model file from `wildfire-kd export`, checked and run the way a field camera runs it.

It opens the file, checks its `wildfire_kd.*` metadata (class names, imgsz, the input contract), letterboxes a frame
exactly as training did (letterbox.py), runs the network, decodes the output and applies class-aware NMS the way
ultralytics' predictor does (boxes.py), and returns detections in the frame's pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import metadata as meta
from .alarms import AlarmRule
from .boxes import CLASS_OFFSET, DEFAULT_CONF, DEFAULT_IOU, MAX_DET, Detection, decode, nms
from .letterbox import INPUT_CONTRACT, letterbox
from .runtimes import open_session


def _readable(path: Path) -> None:
    if path.is_dir():
        return  # a model folder (OpenVINO, NCNN): runtimes.runtime_of judges it
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise InputError(f"model file not found: {path}") from None
    except OSError as e:
        raise InputError(f"model file {path} cannot be read ({e.strerror}); check its permissions") from None


class CameraModel:
    """A model file with its metadata checked: ``detect(frame)`` gives the frame's detections."""

    def __init__(self, path: str | Path, threads: int | None = None, runtime: str | None = None):
        self.path = Path(path)
        _readable(self.path)
        self.runtime = open_session(self.path, runtime, threads)  # onnxruntime, OpenVINO or NCNN, from the file
        self.metadata = self.runtime.metadata
        self._check()

    def _check(self) -> None:
        metadata, path = self.metadata, self.path
        missing = [k for k in ("names", "imgsz", "input") if k not in metadata]
        if missing:
            raise InputError(
                f"{path} has no wildfire_kd metadata ({', '.join(missing)} missing): not made by "
                "`wildfire-kd export`, so its classes and input contract are unknown; export it again"
            )
        if metadata["input"] != INPUT_CONTRACT:
            raise InputError(
                f"{path} expects another input contract ({metadata['input']}) than this runtime feeds "
                f"({INPUT_CONTRACT}); use the wildfire-kd version that exported it"
            )
        self.names: list[str] = meta.names_of(metadata, path)
        self.imgsz = meta.imgsz_of(metadata, path)
        dims = self.runtime.input_shape
        if len(dims) != 4 or any(isinstance(d, int) and d != self.imgsz for d in dims[2:]):
            raise InputError(
                f"{path}: its input {dims} does not take the {self.imgsz}x{self.imgsz} frames its "
                "metadata names; export it again"
            )
        outputs = self.runtime.output_shape
        if len(outputs) != 3 or (isinstance(outputs[1], int) and outputs[1] != 4 + len(self.names)):
            raise InputError(f"{path}: output {outputs} does not hold 4 + {len(self.names)} rows per anchor")
        self.operating_point: dict[str, Any] | None = metadata.get("operating_point")
        raw_rule = metadata.get("alarm")  # the rule validate chose on camera sequences, when it had them
        self.alarm_rule = AlarmRule.from_dict(raw_rule, f"{path}: metadata wildfire_kd.alarm") if raw_rule else None
        raw_profile = metadata.get("camera_profile")  # the input size and tiles validate chose, when it had sequences
        where = f"{path}: metadata wildfire_kd.camera_profile"
        self.profile = CameraProfile.from_dict(raw_profile, where) if raw_profile else None
        if self.profile is not None and self.profile.imgsz not in (None, self.imgsz):
            raise InputError(
                f"{where} is for {self.profile.imgsz} px, the model takes {self.imgsz} px; export it again"
            )

    def tiles_for(self, width: int, height: int, tiles: int | str | None = None) -> tuple[int, str]:
        """(tiles for a ``width`` x ``height`` frame, where that number comes from): ``tiles`` when given (a number,
        or AUTO), else the model file's camera profile, else AUTO."""
        if tiles is not None:
            source = "--tiles"
        elif self.profile is not None:
            tiles, source = self.profile.tiles, "the model file's camera profile"
        else:
            tiles, source = AUTO, "no camera profile in the model file"
        if tiles == AUTO:
            n = auto_tiles(width, height, self.imgsz)
            return (
                n,
                f"{source}: automatic, {width}x{height} frames are {max(width, height) / self.imgsz:.1f}x its input",
            )
        return int(tiles), source

    @property
    def default_conf(self) -> float:
        """The confidence threshold shipped with the model (validate's operating point), else 0.25."""
        return float(self.operating_point["conf"]) if self.operating_point else DEFAULT_CONF

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The raw output for one letterboxed 1x3xSxS tensor: (4 + nc, anchors)."""
        return self.runtime.infer(tensor)

    def _boxes(self, frame_bgr: np.ndarray, conf: float, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass over ``frame_bgr`` (letterboxed to the input size): xyxy in its pixels, scores, class ids."""
        tensor, ratio, (left, top) = letterbox(frame_bgr, self.imgsz)
        xyxy, scores, class_ids = decode(self.infer(tensor), conf, iou)
        h, w = frame_bgr.shape[:2]
        # per-axis gains from the rounded resize, as ultralytics' scale_boxes does
        gain_x, gain_y = max(round(w * ratio), 1) / w, max(round(h * ratio), 1) / h
        xyxy = (xyxy - [left, top, left, top]) / [gain_x, gain_y, gain_x, gain_y]
        return np.clip(xyxy, 0, [w, h, w, h]), scores, class_ids

    def detect(
        self, frame_bgr: np.ndarray, conf: float | None = None, iou: float = DEFAULT_IOU, tiles: int = 1
    ) -> list[Detection]:
        """Detections in ``frame_bgr`` (HxWx3 uint8, as cv2.imread gives), in its pixel coordinates.

        ``tiles`` > 1: also over ``tiles`` overlapping crops along the frame's longer side (and as many as cover the
        other side), each at the model's full input size, merged with the whole-frame pass by class-aware NMS: a
        plume a few pixels wide in a 3000 px frame keeps its pixels instead of shrinking to one or two."""
        conf = self.default_conf if conf is None else conf
        xyxy, scores, class_ids = self._boxes(frame_bgr, conf, iou)
        if tiles > 1:
            parts = [(xyxy, scores, class_ids)]
            for x0, y0, x1, y1 in tile_grid(frame_bgr.shape[1], frame_bgr.shape[0], tiles):
                boxes, s, c = self._boxes(frame_bgr[y0:y1, x0:x1], conf, iou)
                parts.append((boxes + [x0, y0, x0, y0], s, c))
            xyxy, scores, class_ids = (np.concatenate(p) for p in zip(*parts, strict=True))
            kept = nms(xyxy + class_ids[:, None] * CLASS_OFFSET, scores, iou)[:MAX_DET]
            xyxy, scores, class_ids = xyxy[kept], scores[kept], class_ids[kept]
        return [
            Detection(int(c), self.names[int(c)], float(s), tuple(float(v) for v in box))
            for box, s, c in zip(xyxy, scores, class_ids, strict=True)
        ]


TILE_OVERLAP = 0.25  # of a tile's side: a plume on a seam lies whole in one of the two tiles
AUTO = "auto"  # tiles chosen by the frame's size (auto_tiles)
AUTO_MAX_DOWNSCALE = 2.0  # automatic tiling shrinks a tile by at most this to the input: a plume keeps half its pixels
AUTO_MAX_TILES = 3  # ... with at most this many tiles along the longer side (7 passes on a 3:2 frame)
MAX_TILES = 16  # --tiles at most (256 crops of a square frame: minutes per frame on a camera's CPU)
MAX_CROPS_PER_TILE = 4  # a grid of squares beyond this many crops per tile: the frame is a strip (tile_grid)


def auto_tiles(width: int, height: int, imgsz: int) -> int:
    """Tiles along the longer side so that no tile is shrunk by more than AUTO_MAX_DOWNSCALE (1: the whole frame
    is small enough already), at most AUTO_MAX_TILES. A 3072 px tower frame and a 640 px model: 3; 2048 px: 2."""
    scale = max(width, height) / imgsz
    if scale <= AUTO_MAX_DOWNSCALE:
        return 1
    return min(AUTO_MAX_TILES, math.ceil((scale / AUTO_MAX_DOWNSCALE - TILE_OVERLAP) / (1 - TILE_OVERLAP)))


@dataclass(frozen=True)
class CameraProfile:
    """How a camera runs the model: its input size (None: the file's own) and tiles (a number, or AUTO). Chosen by
    `validate --sequences` among validation.camera_profiles and shipped in the file (``wildfire_kd.camera_profile``)."""

    imgsz: int | None = None
    tiles: int | str = AUTO

    def __post_init__(self) -> None:
        if self.imgsz is not None and not (isinstance(self.imgsz, int) and self.imgsz > 0 and self.imgsz % 32 == 0):
            raise InputError(f"camera profile: imgsz {self.imgsz!r} is not a positive multiple of 32")
        if self.tiles != AUTO and not (
            isinstance(self.tiles, int) and not isinstance(self.tiles, bool) and self.tiles >= 1
        ):
            raise InputError(f"camera profile: tiles {self.tiles!r}: a number >= 1, or '{AUTO}' (by the frame's size)")

    def describe(self) -> str:
        size = f"{self.imgsz} px" if self.imgsz else "the model's size"
        tiles = (
            "automatic tiles" if self.tiles == AUTO else "the whole frame" if self.tiles == 1 else f"{self.tiles} tiles"
        )
        return f"{size}, {tiles}"

    def to_dict(self) -> dict[str, Any]:
        return {"imgsz": self.imgsz, "tiles": self.tiles}

    @classmethod
    def from_dict(cls, raw: Any, source: object = "the camera profile") -> CameraProfile:
        if not isinstance(raw, dict) or set(raw) - {"imgsz", "tiles"}:
            raise InputError(f"{source}: not a camera profile ({raw!r}); expected {{imgsz: 640, tiles: 3}}")
        return cls(**raw)


def tile_grid(width: int, height: int, tiles: int) -> list[tuple[int, int, int, int]]:
    """Crops (x0, y0, x1, y1) covering a ``width`` x ``height`` frame: ``tiles`` squares along the longer side,
    overlapping by TILE_OVERLAP of a side, as many along the shorter side as cover it. A frame so elongated that its
    squares would number more than MAX_CROPS_PER_TILE x ``tiles`` (a 20000 x 20 strip: a thousand 20 px squares) gets
    ``tiles`` crops of its whole short side instead (``grid_note`` says so)."""
    side = min(math.ceil(max(width, height) / (tiles - (tiles - 1) * TILE_OVERLAP)), width, height)

    def starts(length: int, size: int) -> list[int]:
        count = max(1, math.ceil((length - size) / (size * (1 - TILE_OVERLAP))) + 1)
        return [round(i * (length - size) / (count - 1)) if count > 1 else 0 for i in range(count)]

    squares = [(x, y, x + side, y + side) for y in starts(height, side) for x in starts(width, side)]
    if len(squares) <= MAX_CROPS_PER_TILE * tiles:
        return squares
    long = math.ceil(max(width, height) / (tiles - (tiles - 1) * TILE_OVERLAP))
    if width >= height:
        return [(x, 0, x + long, height) for x in starts(width, long)]
    return [(0, y, width, y + long) for y in starts(height, long)]


def grid_note(width: int, height: int, tiles: int) -> str | None:
    """What tile_grid did with a frame too elongated for a grid of squares, in words; None when nothing."""
    squares = math.ceil(max(width, height) / max(min(width, height), 1))
    if tiles > 1 and squares > MAX_CROPS_PER_TILE * tiles:
        return f"a {width}x{height} frame would need about {squares} square tiles: {tiles} strips along it instead"
    return None


def max_tiles(width: int, height: int, imgsz: int) -> int:
    """The most tiles along a frame's longer side: no tile smaller than a quarter of the input (enlarged 4x) nor
    MAX_TILES."""
    scale = max(width, height) / (imgsz / 4)
    return max(1, min(MAX_TILES, math.floor((scale - TILE_OVERLAP) / (1 - TILE_OVERLAP))))
