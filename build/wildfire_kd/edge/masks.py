"""Regions of a camera's view that never alarm: the lens vignette, a mast, a chimney. A camera's own setting, not the
model's: it lies in the camera's folder of frames, as Pyronear keeps a mask per camera pose.

- ``mask.png``: the view, any non-zero pixel ignored (stretched to the frame's size if it differs);
- ``mask.json``: ``{"ignore": [[[x, y], ...], ...]}``, polygons in the frame's pixels.

A detection whose box lies mostly (MASKED_FRACTION) in ignored pixels is dropped before the alarm logic sees it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..layout import MASK_IMAGE, MASK_POLYGONS
from .boxes import Detection

MASKED_FRACTION = 0.5  # of a box's area in ignored pixels: the box is the mast, not a plume behind it
MAX_COORDINATE = 100_000  # px: no camera frame is wider (a polygon beyond it is a typo, and slows OpenCV to a crawl)


class CameraMask:
    """A camera's ignored regions (from its folder), rasterised once per frame size."""

    def __init__(self, folder: Path, file: Path | None = None):
        """The mask of a camera ``folder`` (its mask.png and mask.json), or the one ``file`` (a .png or a .json)."""
        self.folder = folder
        if file is not None:
            json_file = Path(file).suffix.lower() == ".json"
            self.image_path, self.polygons = (None, _polygons(Path(file))) if json_file else (Path(file), [])
        else:
            self.image_path = folder / MASK_IMAGE if (folder / MASK_IMAGE).is_file() else None
            self.polygons = _polygons(folder / MASK_POLYGONS) if (folder / MASK_POLYGONS).is_file() else []
        self._raster: dict[tuple[int, int], np.ndarray] = {}

    def fits(self, width: int, height: int) -> str | None:
        """Why the mask image does not fit ``width`` x ``height`` frames (another aspect ratio: another view), or None
        (a mask drawn on a smaller copy of the view is stretched to it)."""
        import cv2

        if self.image_path is None:
            return None
        image = cv2.imread(str(self.image_path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            return f"{self.image_path} is not a readable image"
        h, w = image.shape
        if abs(w / h - width / height) > 0.02 * width / height:
            return f"{self.image_path} is {w}x{h}, the frames {width}x{height}: another view's mask"
        return None

    @property
    def empty(self) -> bool:
        return self.image_path is None and not self.polygons

    def raster(self, width: int, height: int) -> np.ndarray:
        """HxW bool, True where the view is ignored."""
        import cv2

        if (width, height) not in self._raster:
            ignored = np.zeros((height, width), dtype=np.uint8)
            if self.image_path is not None:
                image = cv2.imread(str(self.image_path), cv2.IMREAD_GRAYSCALE)
                if image is None:
                    raise InputError(f"{self.image_path}: not a readable image; a camera mask is a PNG, white = ignore")
                ignored |= cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
            for polygon in self.polygons:
                cv2.fillPoly(ignored, [np.round(polygon).astype(np.int32)], 255)
            self._raster[(width, height)] = ignored > 0
        return self._raster[(width, height)]

    def keep(self, detections: list[Detection], width: int, height: int) -> tuple[list[Detection], int]:
        """(the detections outside the ignored regions, how many were dropped)."""
        if self.empty or not detections:
            return detections, 0
        ignored = self.raster(width, height)
        kept = []
        for d in detections:
            x1, y1, x2, y2 = (int(round(v)) for v in d.box)
            region = ignored[max(y1, 0) : max(y2, y1 + 1), max(x1, 0) : max(x2, x1 + 1)]
            if not region.size or region.mean() < MASKED_FRACTION:
                kept.append(d)
        return kept, len(detections) - len(kept)


def _polygons(path: Path) -> list[np.ndarray]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in raw["ignore"]]
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as e:
        raise InputError(
            f'{path}: not a camera mask ({type(e).__name__}: {e}); write {{"ignore": [[[x, y], ...], ...]}} in the '
            "frame's pixels"
        ) from None
    for i, polygon in enumerate(polygons):
        if len(polygon) < 3:
            raise InputError(f"{path}: polygon {i} has {len(polygon)} points; a polygon needs at least 3")
        if not np.isfinite(polygon).all() or np.abs(polygon).max() > MAX_COORDINATE:
            raise InputError(
                f"{path}: polygon {i} has a point that is not a frame pixel (NaN, infinite, or beyond "
                f"{MAX_COORDINATE:,} px): {polygon.tolist()[:4]}; give its corners in the frame's pixels"
            )
    return polygons
