"""Reading the user's text files (configs, data.yaml, split lists) with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import InputError


def read_text(path: Path, what: str) -> str:
    """``path`` as UTF-8 text; binary or mis-encoded bytes are bad input (exit 2), named with where they start."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); pass {what}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}); pass {what}") from None


def read_yaml(path: Path, what: str) -> Any:
    """``path`` parsed as YAML (safe loader): bad bytes or bad YAML are exit 2 naming the file."""
    import yaml

    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(e).split())}; pass {what}") from None
