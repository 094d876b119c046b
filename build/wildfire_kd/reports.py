"""Writing reports: atomic files, package versions, and the facts every report carries."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .guard import atomic_write_text

_PACKAGES = ("torch", "torchvision", "ultralytics", "onnx", "onnxruntime", "onnxslim", "numpy")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"wildfire-kd": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The project's commit: WILDFIRE_KD_GIT_COMMIT (set in the image) or the source checkout's HEAD."""
    if commit := os.environ.get("WILDFIRE_KD_GIT_COMMIT"):
        return commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_markdown(path: str | Path, lines: list[str]) -> str:
    """Write ``lines`` as one Markdown file (atomically, creating its folder); returns the text, e.g. to print."""
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    return text


def write_json(path: str | Path, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def write_yaml(path: str | Path, payload: Any) -> Path:
    import yaml

    return atomic_write_text(path, yaml.safe_dump(payload, sort_keys=False))


def ensure_writable_dir(path: str | Path, flag: str) -> Path:
    """Prove, before any work, that files can be created in ``path`` (exit 2 otherwise); creates nothing.

    An existing folder gets a real test file; a missing one is judged by its nearest existing ancestor, which
    must be a folder we may write into (``access`` also reports a read-only mount, for root too).
    """
    from .errors import InputError

    folder = Path(path).absolute()
    hint = f"pass a writable {flag} or fix its permissions"
    if folder.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".wildfire-kd-write-check."):
                pass
        except OSError as e:
            raise InputError(f"output folder {folder} is not writable ({e.strerror}); {hint}") from None
        return folder
    ancestor = next(p for p in (folder, *folder.parents) if p.exists())
    if not ancestor.is_dir():
        raise InputError(f"output folder {folder} cannot be created: {ancestor} is a file; {hint}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"output folder {folder} cannot be created: {ancestor} is not writable; {hint}")
    return folder
