"""cameras.yaml: the cameras a service watches, and where their alerts go (`wildfire-kd-edge serve`).

    cameras:
      - id: tower7-north                  # unique: alerts, metrics and the state say it
        source: /srv/ftp/tower7-north     # a folder a camera uploads snapshots to (or folder:///srv/...),
                                          # an http(s):// snapshot URL, or an rtsp:// (any OpenCV) video URL
        interval: 60                      # seconds between frames
        mask: /etc/wildfire/tower7n.png   # optional: its ignored regions (mask.png or mask.json); a folder's own
                                          # mask.png / mask.json otherwise
        tiles: auto                       # optional: tiles (a number, auto); default: the model's camera profile
        backlog: 30                       # folder: more frames waiting than this: skip to the newest (0: never)
        auth: {scheme: digest, user_env: TOWER7_USER, password_env: TOWER7_PASSWORD}   # optional, http(s):
                                          # the credentials come from those environment variables, never this file
    delivery:
      webhook: https://dispatch.example.org/alerts   # optional: each alert POSTed as JSON, retried until acknowledged
      timeout: 10                                    # seconds per delivery attempt

Every problem is bad input (exit 2) naming the file and the line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import InputError
from .model import AUTO, MAX_TILES

SCHEMES = ("folder", "http", "https", "rtsp", "rtsps", "rtmp")
AUTH_SCHEMES = ("basic", "digest")


@dataclass(frozen=True)
class CameraAuth:
    scheme: str  # basic or digest
    user_env: str
    password_env: str

    def credentials(self) -> tuple[str, str]:
        """(user, password) from the environment; a variable that is not set is bad input naming it."""
        missing = [v for v in (self.user_env, self.password_env) if v not in os.environ]
        if missing:
            raise InputError(f"camera credentials: the environment lacks {', '.join(missing)}")
        return os.environ[self.user_env], os.environ[self.password_env]


@dataclass(frozen=True)
class CameraConfig:
    id: str
    source: str
    kind: str  # folder, http, video
    interval: float
    mask: Path | None = None
    tiles: int | str | None = None
    auth: CameraAuth | None = None
    line: int = 0  # where cameras.yaml defines it
    backlog: int = 30  # a folder camera this many frames behind skips to its newest (0: takes every frame)

    @property
    def folder(self) -> Path | None:
        if self.kind != "folder":
            return None
        return Path(urlparse(self.source).path) if self.source.startswith("folder://") else Path(self.source)


@dataclass(frozen=True)
class ServiceConfig:
    path: Path
    cameras: list[CameraConfig]
    webhook: str | None = None
    timeout: float = 10.0
    notes: list[str] = field(default_factory=list)


def _lines(text: str, path: Path) -> Any:
    """The YAML with each mapping's line (1-based) under the key '__line__'."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        value = loader.construct_mapping(node, deep=True)
        value["__line__"] = node.start_mark.line + 1
        return value

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader with one constructor added)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def _number(raw: Any, where: str, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw <= 0:
        raise InputError(f"{where}: {name} {raw!r} must be a number of seconds above 0")
    return float(raw)


def _tiles(raw: Any, where: str) -> int | str | None:
    if raw is None or raw == AUTO:
        return raw
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_TILES:
        raise InputError(f"{where}: tiles {raw!r}: 1 to {MAX_TILES}, or '{AUTO}'")
    return raw


def _auth(raw: Any, where: str) -> CameraAuth | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"scheme", "user_env", "password_env", "__line__"}:
        raise InputError(f"{where}: auth must be {{scheme: basic|digest, user_env: VAR, password_env: VAR}}")
    if raw.get("scheme", "basic") not in AUTH_SCHEMES or not raw.get("user_env") or not raw.get("password_env"):
        raise InputError(
            f"{where}: auth needs scheme basic or digest and the names of two environment variables (user_env, "
            "password_env): credentials never stand in cameras.yaml in clear"
        )
    return CameraAuth(raw.get("scheme", "basic"), str(raw["user_env"]), str(raw["password_env"]))


def _kind(source: Any, where: str) -> str:
    if not isinstance(source, str) or not source.strip():
        raise InputError(f"{where}: source must be a folder, an http(s):// snapshot URL or an rtsp:// video URL")
    scheme = urlparse(source).scheme.lower()
    if not scheme or len(scheme) == 1:  # a plain path (C: on Windows counts as a path)
        return "folder"
    if scheme not in SCHEMES:
        raise InputError(f"{where}: source {source!r}: scheme '{scheme}' is not one of {', '.join(SCHEMES)}")
    return {"folder": "folder", "http": "http", "https": "http"}.get(scheme, "video")


KNOWN = {"id", "source", "interval", "mask", "tiles", "auth", "backlog", "__line__"}


def _camera(raw: Any, path: Path) -> CameraConfig:
    line = raw.get("__line__", 0) if isinstance(raw, dict) else 0
    where = f"{path}:{line}"
    if not isinstance(raw, dict):
        raise InputError(f"{path}: each camera is a mapping (id, source, interval, ...), got {raw!r}")
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; a camera has {sorted(KNOWN - {'__line__'})}")
    camera_id = raw.get("id")
    if not isinstance(camera_id, str | int) or not str(camera_id).strip() or "/" in str(camera_id):
        raise InputError(f"{where}: id {camera_id!r}: a name without '/' (alerts, metrics and the state use it)")
    kind = _kind(raw.get("source"), where)
    mask = Path(raw["mask"]) if raw.get("mask") else None
    if mask is not None and not mask.is_file():
        raise InputError(f"{where}: mask {mask} is not a file (a mask.png, white = ignore, or a mask.json)")
    interval = _number(raw.get("interval", 60), where, "interval")
    backlog = raw.get("backlog", 30)
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 0:
        raise InputError(f"{where}: backlog {backlog!r}: frames a folder camera may fall behind (0: never skip)")
    return CameraConfig(str(camera_id), raw["source"], kind, interval, mask, _tiles(raw.get("tiles"), where),
                        _auth(raw.get("auth"), where), line, backlog)  # fmt: skip


def _delivery(raw: Any, path: Path) -> tuple[str | None, float]:
    if raw is None:
        return None, 10.0
    where = f"{path}:{raw.get('__line__', 0) if isinstance(raw, dict) else 0}"
    if not isinstance(raw, dict) or set(raw) - {"webhook", "timeout", "__line__"}:
        raise InputError(f"{where}: delivery holds webhook (an http(s) URL) and timeout (seconds)")
    return check_webhook(raw.get("webhook"), where), _number(raw.get("timeout", 10), where, "timeout")


def check_webhook(url: Any, where: str) -> str | None:
    """A webhook URL must be http(s) with a host."""
    if url is None:
        return None
    parsed = urlparse(str(url))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"{where}: webhook {url!r} is not an http(s) URL (e.g. https://dispatch.example.org/alerts)")
    return str(url)


def load_cameras(path: str | Path) -> ServiceConfig:
    """cameras.yaml, checked (module doc)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--cameras {path}: cannot be read ({e}); pass a cameras.yaml") from None
    raw = _lines(text, path)
    if not isinstance(raw, dict) or not isinstance(raw.get("cameras"), list) or not raw["cameras"]:
        raise InputError(f"{path}: needs 'cameras:', a list of cameras (id, source, interval); see --help")
    unknown = sorted(set(raw) - {"cameras", "delivery", "__line__"})
    if unknown:
        raise InputError(f"{path}: unknown key(s) {unknown}; the file holds cameras and delivery")
    cameras, seen = [], {}
    for item in raw["cameras"]:
        camera = _camera(item, path)
        if camera.id in seen:
            raise InputError(f"{path}:{camera.line}: camera id {camera.id!r} is already used at line {seen[camera.id]}")
        seen[camera.id] = camera.line
        cameras.append(camera)
    webhook, timeout = _delivery(raw.get("delivery"), path)
    return ServiceConfig(path, cameras, webhook, timeout)
