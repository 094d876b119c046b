"""Where a camera's frames come from (cameras.yaml's ``source``), each giving the next frame as (name, time, image):

- a folder a camera uploads snapshots to (an FTP/SMB drop): the frames arrive as files; each poll takes the next
  complete one after the last taken, in name order (time order for time-stamped names), so none is skipped; a file
  still being written (its size still changing, a JPEG without its end marker, younger than SETTLE_S) waits for the
  next poll; a backlog of more than the camera's ``backlog`` frames (the service was down) is skipped to the newest;
- an http(s) snapshot URL (most IP cameras): one GET per interval, with a timeout and retries, basic or digest auth
  from the environment;
- a video URL (rtsp://, through OpenCV): one frame per interval, the stream reopened when it fails.

A frame's time is the one its name carries (HPWREN's ``<unix>_<±s>.jpg``, or a leading unix time), else the file's
modification time, or the snapshot's Last-Modified header, else the time it was taken. What a folder camera has taken
so far is its ``state`` (saved with the camera's; a restart goes on from there).
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .cameras import CameraConfig
from .sequences import is_frame, name_time

SETTLE_S = 1.0  # a file younger than this may still be written (an FTP upload in progress)


class Frame:
    def __init__(self, name: str, time: float, image: np.ndarray):
        self.name, self.time, self.image = name, time, image


END_MARKERS = {".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9", ".png": b"IEND\xaeB`\x82"}  # what a whole file ends with
GIVE_UP_S = 30.0  # a file that still does not decode this long after its last change is unreadable, not unfinished


def _complete(path: Path, seen: dict[str, tuple[int, float]]) -> bool:
    """Written whole: untouched for SETTLE_S (its modification time, or its size as polls saw it: ``seen``, name ->
    (size, when first seen at that size)), and a JPEG or PNG ends with its end marker (a writer that pauses
    mid-file leaves none); the frame that still does not decode is given GIVE_UP_S more (FolderSource.next)."""
    try:
        stat = path.stat()
    except OSError:
        return False
    now = time.time()
    size, since = seen.get(path.name, (-1, now))
    if size != stat.st_size:
        seen[path.name] = (stat.st_size, now)
        since = now
    if stat.st_size == 0 or max(now - since, now - stat.st_mtime) < SETTLE_S:
        return False
    marker = END_MARKERS.get(path.suffix.lower())
    if marker is not None:
        with open(path, "rb") as f:
            f.seek(-len(marker), 2)
            return f.read() == marker
    return True


class FolderSource:
    """Snapshots dropped into a folder, taken in name order, none twice, none half-written."""

    def __init__(self, camera: CameraConfig):
        self.camera, self.folder = camera, camera.folder
        self.last: str | None = None  # the last frame taken (its name)
        self.sizes: dict[str, tuple[int, float]] = {}
        self.notes: list[str] = []

    def state(self) -> dict[str, Any]:
        return {"last": self.last}

    def restore(self, state: dict[str, Any]) -> None:
        self.last = state.get("last")

    def pending(self) -> list[Path]:
        if not self.folder.is_dir():
            raise OSError(f"the folder {self.folder} is not there")
        frames = sorted((p for p in self.folder.iterdir() if is_frame(p) and not p.name.startswith(".")),
                        key=lambda p: p.name)  # fmt: skip
        return [p for p in frames if self.last is None or p.name > self.last]

    def next(self) -> Frame | None:
        import cv2

        pending = self.pending()
        if self.camera.backlog and len(pending) > self.camera.backlog:
            self.notes.append(f"{len(pending) - 1} frames behind: skipped to the newest, {pending[-1].name}")
            pending = pending[-1:]
        for path in pending[:1]:
            if not _complete(path, self.sizes):
                return None
            image = cv2.imread(str(path))
            if image is None and time.time() - path.stat().st_mtime < GIVE_UP_S:
                return None  # whole by its size and marker, yet not decodable: perhaps still written; next poll
            self.last = path.name  # taken, readable or not: an unreadable file is not read again and again
            self.sizes.pop(path.name, None)
            if image is None:
                raise OSError(f"{path}: not a readable image")
            return Frame(path.name, name_time(path.name) or path.stat().st_mtime, image)
        return None

    def more(self) -> bool:
        """Frames wait already: take the next at once."""
        return bool(self.pending())


class HttpSource:
    """A snapshot URL: one GET per poll."""

    def __init__(self, camera: CameraConfig, timeout: float = 10.0):
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.camera, self.timeout = camera, timeout
        self.session = requests.Session()
        retry = Retry(total=2, connect=2, read=1, backoff_factor=0.5, status_forcelist=(502, 503, 504))
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.auth = None
        if camera.auth is not None:
            user, password = camera.auth.credentials()
            digest = camera.auth.scheme == "digest"
            self.auth = requests.auth.HTTPDigestAuth(user, password) if digest else (user, password)

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass

    def next(self) -> Frame | None:
        import cv2

        response = self.session.get(self.camera.source, auth=self.auth, timeout=self.timeout)
        response.raise_for_status()
        image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"{self.camera.source}: the answer is not an image ({response.headers.get('content-type')})")
        taken = time.time()
        if stamp := response.headers.get("Last-Modified"):
            try:
                taken = parsedate_to_datetime(stamp).timestamp()
            except (TypeError, ValueError):
                pass
        return Frame(f"{self.camera.id}-{taken:.0f}.jpg", taken, image)

    def more(self) -> bool:
        return False


class VideoSource:
    """A video stream (rtsp:// and what else OpenCV opens): one frame per poll, reopened when it fails."""

    def __init__(self, camera: CameraConfig):
        self.camera, self.capture = camera, None

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass

    def next(self) -> Frame | None:
        import cv2

        if self.capture is None or not self.capture.isOpened():
            self.capture = cv2.VideoCapture(self.camera.source)
        ok, image = self.capture.read()
        if not ok or image is None:
            self.capture.release()
            self.capture = None
            raise OSError(f"{self.camera.source}: no frame from the stream")
        taken = time.time()
        return Frame(f"{self.camera.id}-{taken:.0f}.jpg", taken, image)

    def more(self) -> bool:
        return False


def open_source(camera: CameraConfig, timeout: float = 10.0):
    if camera.kind == "folder":
        return FolderSource(camera)
    if camera.kind == "http":
        return HttpSource(camera, timeout)
    if camera.kind == "video":
        return VideoSource(camera)
    raise InputError(f"camera {camera.id}: source kind {camera.kind!r} unknown")
