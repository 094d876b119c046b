"""Resolving and loading weights files. A sha256 pin, when given, is checked before anything is unpickled."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("wildfire_kd")

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | Path, expected_sha256: str | None, role: str) -> str:
    """Check that ``path`` exists and matches its pin; returns the computed sha256."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{role} weights not found: {p} (pass an existing .pt file)")
    actual = sha256_file(p)
    if expected_sha256 is not None and actual != expected_sha256.lower():
        raise InputError(
            f"{role} weights {p} have sha256 {actual}, but the config pins {expected_sha256} "
            f"(use the pinned file, or update train.{role}_sha256 if this file is the one you trust)"
        )
    if expected_sha256 is None:
        log.info("%s weights %s sha256 %s (pin it with train.%s_sha256)", role, p, actual, role)
    return actual


def load_detection_model(path: str | Path, expected_sha256: str | None = None, role: str = "teacher") -> nn.Module:
    """Load an ultralytics detection checkpoint as an FP32 model in eval mode, after checking its pin."""
    verify_file(path, expected_sha256, role)
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    try:
        model, _ = load_checkpoint(str(path))
    except Exception as e:  # a truncated or foreign file: say which and why, without a traceback
        raise InputError(f"{role} weights {path} could not be loaded as an ultralytics checkpoint: {e}") from e
    if not isinstance(model, DetectionModel):
        raise InputError(f"{role} weights {path} hold a {type(model).__name__}, not a YOLO detection model")
    return model


def model_class_names(model: nn.Module) -> list[str]:
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    return [str(n) for n in (names or [])]
