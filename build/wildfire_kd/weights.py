"""Resolving and loading weights files: nothing is unpickled before its pin is checked, and by default nothing
is unpickled that could run code.

A `.pt` file is a pickle. Every file wildfire-kd is given (teacher, student, resume checkpoint) is first loaded
the way ultralytics' `ULTRALYTICS_SAFE_LOAD` does: `torch.load(weights_only=True)` against an allow-list of its
model classes, which reconstructs real checkpoints (ours and plain ultralytics ones, optimizer state included)
and refuses anything else before it runs. A file that needs full unpickling is refused (exit 2) unless its
sha256 pin matches (`train.teacher_sha256` / `train.student_sha256`) or the user opts in for files they trust
(`train.allow_unsafe_weights`). ultralytics' own loads (the trainer's student, resume, feature distillation's
teacher, the validator) follow the same policy: safe by default, full only inside :func:`ultralytics_loading`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("wildfire_kd")

_CHUNK = 1 << 20
OPT_IN = "train.allow_unsafe_weights"
MODULES_KEY = "train.teacher_modules"


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


@contextmanager
def ultralytics_loading(full: bool) -> Iterator[None]:
    """ultralytics' checkpoint loads inside this block: weights-only (``full=False``) or full unpickling."""
    import ultralytics.nn.tasks as tasks

    previous = tasks.SAFE_LOAD
    tasks.SAFE_LOAD = not full
    try:
        yield
    finally:
        tasks.SAFE_LOAD = previous


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()).replace("ERROR ❌️ ", "")
    return text.split(" Recommended fixes")[0].split(". Use an official")[0][:300]


def _reason(error: Exception) -> str:
    """torch's own words for why a weights-only load failed, else the error's first sentence."""
    import re

    cause = error.__cause__
    text = " ".join(str(cause or "").split())
    found = re.search(r"WeightsUnpickler error: (.+?)(?: Check the documentation|$)", text)
    if found:
        return found.group(1).rstrip(".")
    return f"{type(cause).__name__}: {text}".rstrip(": ") if cause else _one_line(error)


@dataclass(frozen=True)
class CheckedWeights:
    """A weights file that passed its checks, once: hand it down instead of checking the file again."""

    path: str
    role: str  # teacher, student, resume checkpoint: how errors name it
    sha256: str
    full_unpickling: bool  # it needs full unpickling, which its pin or train.allow_unsafe_weights allowed


def check_weights(
    path: str | Path, expected_sha256: str | None, role: str, allow_unsafe: bool = False
) -> CheckedWeights:
    """Pin check, then a weights-only load. A file that needs full unpickling is allowed when pinned or opted in
    (``full_unpickling`` then says so) and refused otherwise; a file that is not a checkpoint at all: exit 2."""
    digest = verify_file(path, expected_sha256, role)
    full = _needs_full_unpickling(path, expected_sha256, role, allow_unsafe, digest)
    return CheckedWeights(str(path), role, digest, full)


def _needs_full_unpickling(
    path: str | Path, expected_sha256: str | None, role: str, allow_unsafe: bool, digest: str
) -> bool:
    from ultralytics.nn.tasks import torch_safe_load

    try:
        torch_safe_load(str(path), safe_only=True)
        return False
    except Exception as e:
        # ultralytics turns every weights-only refusal into one TypeError; torch's own message underneath says
        # whether the pickle asked for a GLOBAL outside the allow-list (an object that needs code to rebuild) or
        # the bytes are no pickle at all ("Unsupported operand")
        refused_global = isinstance(e, TypeError) and "GLOBAL" in str(e.__cause__ or "")
        if not refused_global:
            raise InputError(
                f"{role} weights {path} are not an ultralytics checkpoint: empty, truncated, corrupted or not a "
                f"PyTorch file ({_reason(e)}); pass a .pt file saved by ultralytics or wildfire-kd"
            ) from None
    if expected_sha256 is None and not allow_unsafe:
        raise InputError(
            f"{role} weights {path} refused: the file holds Python objects outside the ultralytics checkpoint "
            f"format, and loading it would run code from it. If you trust it, pin it (train.{role}_sha256={digest}) "
            f"or set {OPT_IN}=true"
        )
    log.warning(
        "%s weights %s need full unpickling; loading them because %s",
        role,
        path,
        "their sha256 pin matches" if expected_sha256 else f"{OPT_IN} is set",
    )
    return True


def load_modules(specs: list[str]) -> list[str]:
    """Make the classes a checkpoint names under ``__main__`` (its training script's custom blocks) resolvable:
    import each of ``specs`` (a Python file, or an importable module) and put the classes it defines into
    ``__main__``, named as they are there, so a checkpoint pickled with them loads, and one saved from them (a
    finetuned teacher) names them the same way. Idempotent; returns the class names provided. Importing runs the
    files' code: they are code the user chose to run; the checkpoint itself still needs its pin or the opt-in."""
    import importlib
    import importlib.util
    import inspect
    import sys

    import __main__

    provided = []
    for spec in specs:
        if spec.endswith(".py") or "/" in spec:
            path = Path(spec)
            if not path.is_file():
                raise InputError(f"{MODULES_KEY}: {spec} is not a file; give the .py file that defines the blocks")
            name = f"wildfire_kd_user_modules.{path.stem}"
            module = sys.modules.get(name)
            if module is None or Path(getattr(module, "__file__", "")).resolve() != path.resolve():
                found = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(found)
                _run_user_module(found, module, spec, name)
        else:
            try:
                module = importlib.import_module(spec)
            except (Exception, SystemExit) as e:
                raise InputError(f"{MODULES_KEY}: cannot import {spec} ({_what_it_did(e)})") from None
        for attr, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ in (module.__name__, "__main__"):
                cls.__module__ = "__main__"  # pickled as the checkpoint names them
                setattr(__main__, attr, getattr(__main__, attr, cls))
                provided.append(attr)
    return provided


def _what_it_did(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r}) while being imported; a module of classes must not exit"
    return f"{type(error).__name__}: {error}"


def _run_user_module(spec, module, given: str, name: str) -> None:
    import sys

    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # a module that calls sys.exit() would end wildfire-kd without a word
        del sys.modules[name]
        raise InputError(f"{MODULES_KEY}: {given} failed to import ({_what_it_did(e)})") from None


def _missing_class(error: Exception, checked: CheckedWeights) -> InputError | None:
    """A checkpoint naming a class nothing defines: say which, and the key that provides it."""
    import re

    text = " ".join(str(error).split())
    found = re.search(r"Can't get attribute '(\w+)' on <module '__main__'", text)
    if found is None and isinstance(error, ModuleNotFoundError):
        found = re.search(r"No module named '([\w.]+)'", text)
    if found is None:
        return None
    return InputError(
        f"{checked.role} weights {checked.path} need the class or module {found.group(1)!r}, which the script that "
        f"trained them defined: give the Python file (or module) that defines it with {MODULES_KEY} "
        f"(--teacher-modules FILE.py)"
    )


def load_checked(checked: CheckedWeights) -> nn.Module:
    """A file :func:`check_weights` passed, as an FP32 detection model in eval mode."""
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    path, role = checked.path, checked.role
    try:
        with ultralytics_loading(checked.full_unpickling):
            model, _ = load_checkpoint(str(path))
    except Exception as e:  # passed the checks but is still not a usable model: say which and why, in one line
        raise _missing_class(e, checked) or InputError(
            f"{role} weights {path} could not be loaded as a checkpoint: {_one_line(e)}"
        ) from e
    if not isinstance(model, DetectionModel):
        raise InputError(f"{role} weights {path} hold a {type(model).__name__}, not a YOLO detection model")
    return model


def load_yolo(checked: CheckedWeights):
    """ultralytics' YOLO around a file :func:`check_weights` passed (its validator and predictor), loaded once."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    try:
        with ultralytics_loading(checked.full_unpickling):
            yolo = YOLO(str(checked.path))
    except Exception as e:
        raise _missing_class(e, checked) or InputError(
            f"{checked.role} weights {checked.path} could not be loaded: {_one_line(e)}"
        ) from e
    if not isinstance(yolo.model, DetectionModel):
        raise InputError(f"{checked.role} weights {checked.path} hold a {type(yolo.model).__name__}, not a detector")
    return yolo


def load_detection_model(
    path: str | Path, expected_sha256: str | None = None, role: str = "teacher", allow_unsafe: bool = False
) -> nn.Module:
    """:func:`check_weights`, then :func:`load_checked`."""
    return load_checked(check_weights(path, expected_sha256, role, allow_unsafe))


def model_class_names(model: nn.Module) -> list[str]:
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    return [str(n) for n in (names or [])]
