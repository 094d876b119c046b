"""Process-wide settings that must be in place before ultralytics is imported.

ultralytics reads YOLO_OFFLINE / YOLO_AUTOINSTALL / ULTRALYTICS_SAFE_LOAD at import time, tries to download
Arial.ttf the first time it checks a dataset, and writes settings into its config dir. We point that config
dir at a folder we own and seed the font from matplotlib's bundled DejaVuSans, so a run on local inputs never
reaches the network and never writes into the user's own ultralytics settings.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


def default_config_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "wildfire-kd" / "ultralytics"


def prepare_ultralytics() -> None:
    """Make ultralytics offline-safe and quiet about updates. Idempotent; call before importing it."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    # checkpoints load weights-only unless wildfire_kd.weights allows a trusted file more (see that module)
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "1")
    # ultralytics appends "Ultralytics" to YOLO_CONFIG_DIR
    config_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(default_config_dir()))).expanduser() / "Ultralytics"
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        _seed_fonts(config_dir)
    except OSError:
        # read-only home (e.g. a locked-down container): ultralytics falls back to /tmp itself
        pass


def _seed_fonts(config_dir: Path) -> None:
    missing = [name for name in _FONT_NAMES if not (config_dir / name).exists()]
    if not missing:
        return
    import matplotlib  # a dependency of ultralytics; ships DejaVuSans

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if source.exists():
        for name in missing:
            shutil.copyfile(source, config_dir / name)
