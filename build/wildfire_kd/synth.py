"""The deterministic synthetic smoke/fire data for the demo, the tests and the benchmarks (`wildfire-kd synth`).

Smoke is soft grey plumes, fire is clusters of orange flame triangles, on sky/vegetation backgrounds with dark
distractors (tree crowns, rocks). Same arguments, same files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from .config import SynthSettings
from .errors import InputError
from .layout import SYNTH_MARKER

_SPLIT_IDS = {"train": 0, "val": 1, "unlabeled": 2}  # each split its own random streams: never the same frame
UNLABELED_DIR = "unlabeled"  # synth --unlabeled: the pool of frames without labels
UNLABELED_TRUTH_DIR = "unlabeled_labels"  # what their labels would be; training never reads it


def _draw_smoke(draw_layer, rng, w: int, h: int) -> tuple[float, float, float, float]:
    bw, bh = rng.uniform(0.18, 0.4) * w, rng.uniform(0.2, 0.45) * h
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return paint_plume(draw_layer, rng, x0, y0, bw, bh)


def paint_plume(draw_layer, rng, x0: float, y0: float, bw: float, bh: float) -> tuple[float, float, float, float]:
    """Soft grey puffs inside the box (x0, y0, bw, bh) on an RGBA layer; returns the visible extent."""
    from PIL import ImageDraw

    d = ImageDraw.Draw(draw_layer)
    shade = int(rng.integers(150, 225))
    for _ in range(int(rng.integers(5, 9))):  # a plume: overlapping soft puffs inside the box
        pw, ph = rng.uniform(0.35, 0.7) * bw, rng.uniform(0.3, 0.6) * bh
        px, py = rng.uniform(x0, x0 + bw - pw), rng.uniform(y0, y0 + bh - ph)
        d.ellipse([px, py, px + pw, py + ph], fill=(shade, shade, shade + 8, int(rng.integers(140, 210))))
    bbox = draw_layer.getchannel("A").point(lambda a: 255 if a > 60 else 0).getbbox()
    return bbox if bbox else (x0, y0, x0 + bw, y0 + bh)


def _draw_fire(draw, rng, w: int, h: int) -> tuple[float, float, float, float]:
    bw, bh = rng.uniform(0.1, 0.25) * w, rng.uniform(0.12, 0.3) * h
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    base = y0 + bh
    colours = [(255, 90, 0), (255, 150, 20), (250, 220, 60), (220, 40, 10)]
    for _ in range(int(rng.integers(4, 8))):  # flames: triangles rising from a common base line
        fw = rng.uniform(0.25, 0.6) * bw
        fx = rng.uniform(x0, x0 + bw - fw)
        top = rng.uniform(y0, y0 + 0.5 * bh)
        draw.polygon([(fx, base), (fx + fw, base), (fx + fw / 2, top)], fill=colours[int(rng.integers(0, 4))])
    draw.polygon([(x0, base), (x0 + bw, base), (x0 + bw / 2, y0)], fill=(255, 120, 10))
    return x0, y0, x0 + bw, base


def _background(rng, size: int):
    """Sky over vegetation with sensor noise and dark distractors (tree crowns, rocks): (PIL image, horizon row)."""
    import numpy as np
    from PIL import Image, ImageDraw

    w = h = size
    horizon = int(rng.uniform(0.3, 0.6) * h)
    sky, ground = rng.integers(90, 200, 3), rng.integers(30, 120, 3)
    ground[1] = max(ground[1], ground[0])  # vegetation leans green
    canvas = np.zeros((h, w, 3), dtype=np.float32)
    canvas[:horizon] = np.linspace(sky, sky * 0.8, horizon)[:, None, :]
    canvas[horizon:] = np.linspace(ground, ground * 0.7, h - horizon)[:, None, :]
    canvas += rng.normal(0, 8, canvas.shape)
    image = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 6))):  # distractors: dark tree crowns and rocks
        r = rng.uniform(0.02, 0.07) * w
        cx, cy = rng.uniform(0, w), rng.uniform(horizon, h)
        draw.ellipse([cx - r, cy - 2 * r, cx + r, cy], fill=tuple(int(v) for v in rng.integers(10, 70, 3)))
    return image, horizon


def _synth_image(rng, size: int, classes: Sequence[str], max_objects: int):
    from PIL import Image, ImageDraw, ImageFilter

    w = h = size
    image, _ = _background(rng, size)
    draw = ImageDraw.Draw(image)
    boxes: list[tuple[int, float, float, float, float]] = []
    for _ in range(int(rng.integers(0, max_objects + 1))):
        cls = int(rng.integers(0, len(classes)))
        if classes[cls] == "smoke":
            layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
            x0, y0, x1, y1 = _draw_smoke(layer, rng, w, h)
            layer = layer.filter(ImageFilter.GaussianBlur(radius=max(1.0, size / 160)))
            image.paste(layer, (0, 0), layer)
        else:
            x0, y0, x1, y1 = _draw_fire(draw, rng, w, h)
        boxes.append((cls, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h))
    return image, boxes


DISTRACTORS = ("cloud bank", "haze", "sun glare", "dust")


def _distractor_frame(rng, extra, size: int):
    """A smoke-free frame: the usual scene plus one of DISTRACTORS, painted soft like smoke can look."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    image, horizon = _background(rng, size)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    kind = DISTRACTORS[int(extra.integers(len(DISTRACTORS)))]
    if kind == "cloud bank":  # wide, flat, bright, high in the sky
        y = extra.uniform(0.05, 0.3) * horizon
        for _ in range(int(extra.integers(4, 8))):
            cx, w, h = extra.uniform(0, size), extra.uniform(0.2, 0.45) * size, extra.uniform(0.05, 0.12) * size
            tone = int(extra.integers(215, 250))
            d.ellipse([cx - w / 2, y, cx + w / 2, y + h], fill=(tone, tone, tone, int(extra.integers(150, 220))))
    elif kind == "haze":  # a veil over the whole frame, thicker towards the horizon
        veil = np.zeros((size, size, 4), dtype=np.uint8)
        veil[..., :3] = int(extra.integers(190, 230))
        veil[..., 3] = np.clip(np.linspace(40, 140, size)[:, None] * extra.uniform(0.6, 1.0), 0, 255).astype(np.uint8)
        layer = Image.fromarray(veil, "RGBA")
    elif kind == "sun glare":
        r, cx, cy = extra.uniform(0.05, 0.12) * size, extra.uniform(0, size), extra.uniform(0, horizon)
        for k, alpha in ((2.5, 60), (1.6, 120), (1.0, 235)):
            d.ellipse([cx - k * r, cy - k * r, cx + k * r, cy + k * r], fill=(255, 248, 215, alpha))
    else:  # dust: a low brownish cloud over the ground
        cx, cy = extra.uniform(0.1, 0.9) * size, extra.uniform(horizon, size)
        for _ in range(int(extra.integers(3, 6))):
            w, h = extra.uniform(0.15, 0.35) * size, extra.uniform(0.05, 0.1) * size
            x, y = cx + extra.uniform(-0.1, 0.1) * size, cy + extra.uniform(-0.05, 0.05) * size
            d.ellipse([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=(150, 125, 95, int(extra.integers(110, 180))))
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(1.5, size / 80)))
    image.paste(layer, (0, 0), layer)
    return image


def _small_plume(image, extra, size: int) -> tuple[float, float, float, float]:
    """A small, distant plume painted onto ``image``; returns its normalised (cx, cy, w, h)."""
    from PIL import Image, ImageFilter

    bw, bh = extra.uniform(0.03, 0.07) * size, extra.uniform(0.04, 0.09) * size
    x0, y0 = extra.uniform(0, size - bw), extra.uniform(0.15, 0.6) * size
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    x1_, y1_, x2_, y2_ = paint_plume(layer, extra, x0, y0, bw, bh)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(0.6, size / 320)))
    image.paste(layer, (0, 0), layer)
    return (x1_ + x2_) / 2 / size, (y1_ + y2_) / 2 / size, (x2_ - x1_) / size, (y2_ - y1_) / size


def _frame(s: SynthSettings, split: str, i: int):
    """Frame ``i`` of ``split``: (PIL image, boxes as (class, cx, cy, w, h) normalised)."""
    import numpy as np

    classes = list(s.classes)
    rng = np.random.default_rng([s.seed, _SPLIT_IDS[split], i])
    extra = np.random.default_rng([s.seed, _SPLIT_IDS[split], i, 1])
    if extra.random() < s.distractor_frames:
        return _distractor_frame(rng, extra, s.imgsz), []
    image, boxes = _synth_image(rng, s.imgsz, classes, s.max_objects)
    if "smoke" in classes and extra.random() < s.small_plumes:
        boxes.append((classes.index("smoke"), *_small_plume(image, extra, s.imgsz)))
    return image, boxes


def synthesize(out: str | Path, settings: SynthSettings | None = None, force: bool = False, **changes: Any) -> Path:
    """Write a deterministic synthetic smoke/fire dataset in YOLO format; returns its data.yaml.

    ``settings`` (default: ``SynthSettings()``, the config's ``synth`` section) with any of its keys changed by
    ``changes``, e.g. ``synthesize(out, train_images=8, imgsz=64)``; unknown keys or bad values: InputError.

    Smoke is soft grey plumes, fire is clusters of orange flame triangles, on sky/vegetation backgrounds with
    dark distractors; about one image in (max_objects + 1) is background. ``distractor_frames`` of the frames are
    smoke-free with a cloud bank, haze, sun glare or dust (the false alarms a camera network fears);
    ``small_plumes`` of the others also get a small, distant plume. Each frame draws these from its own extra
    random stream, so with both at 0 the files are those of earlier versions. Same arguments, same files.
    ``unlabeled_images``: also a pool of frames drawn the same way (streams of their own) in ``unlabeled/``, with the
    labels they would have in ``unlabeled_labels/`` (outside ultralytics' images/ -> labels/ rule: never read as
    labels; benchmarks use them for the all-labelled comparison).
    ``out`` must be new or empty, or (with ``force``) an earlier output of `synth`, which is cleared first.
    """
    s = _settings(settings, changes)
    with staged_output(Path(out), force, {"kind": "dataset", **s.model_dump()}) as root:
        _write_dataset(root, s)
    return Path(out) / "data.yaml"


def _write_dataset(root: Path, s: SynthSettings) -> None:
    classes = list(s.classes)
    folders = {split: (root / "images" / split, root / "labels" / split) for split in ("train", "val")}
    folders["unlabeled"] = (root / UNLABELED_DIR, root / UNLABELED_TRUTH_DIR)  # off ultralytics' images/ -> labels/
    counts = {"train": s.train_images, "val": s.val_images, "unlabeled": s.unlabeled_images}
    for split, count in counts.items():
        images, labels = folders[split]
        for folder in (images, labels) if count else ():
            folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, boxes = _frame(s, split, i)
            stem = f"{split}_{i:05d}"
            image.save(images / f"{stem}.jpg", quality=92)
            rows = "".join(f"{c} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in boxes)
            (labels / f"{stem}.txt").write_text(rows, encoding="utf-8")
    (root / "data.yaml").write_text(
        "# synthetic smoke/fire dataset written by `wildfire-kd synth` (deterministic; for demos and tests)\n"
        + yaml.safe_dump(
            {"train": "images/train", "val": "images/val", "names": dict(enumerate(classes))}, sort_keys=False
        ),
        encoding="utf-8",
    )


def _settings(settings: SynthSettings | None, changes: dict[str, Any]) -> SynthSettings:
    from pydantic import ValidationError

    base = (settings or SynthSettings()).model_dump()
    try:
        return SynthSettings(**{**base, **changes})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise InputError(f"synthetic dataset settings: {problems}") from None


_OLD_DATASET_HEADER = "# synthetic smoke/fire dataset written by `wildfire-kd synth`"  # before the marker file


def _earlier_output(root: Path) -> bool:
    """Is ``root`` a folder `synth` wrote (this version's marker, or an earlier version's own files)?"""
    if (root / SYNTH_MARKER).is_file():
        return True
    data_yaml = root / "data.yaml"
    return data_yaml.is_file() and data_yaml.read_text(encoding="utf-8", errors="replace").startswith(
        _OLD_DATASET_HEADER
    )


def _check_output(root: Path, force: bool) -> None:
    """``root`` may take a new output: new or empty; an earlier `synth` output only with ``force``. Anything else is
    refused (exit 2): synth never writes into a folder it did not make."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is a file; pass a new or empty folder to synth")
    if root.is_dir() and any(root.iterdir()):
        if not _earlier_output(root):
            raise InputError(
                f"{root} is not empty and not an output of `wildfire-kd synth`; synth never writes into your files: "
                "choose a new or empty folder"
            )
        if not force:
            raise InputError(f"{root} holds an earlier output of `wildfire-kd synth`; pass --force to replace it")


@contextmanager
def staged_output(root: Path, force: bool, marker: dict[str, Any]) -> Iterator[Path]:
    """A staging folder beside ``root`` for the new output; when the block ends it replaces ``root``'s content (an
    earlier output of synth, with ``force``). A run that fails (a full disk, a kill) leaves ``root`` as it was."""
    _check_output(root, force)
    root.mkdir(parents=True, exist_ok=True)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{root.name}.synth-", dir=root.parent))
    except OSError:  # a parent we may not write (a volume mounted at /out): stage inside root itself
        stage = Path(tempfile.mkdtemp(prefix=".synth-", dir=root))
    try:
        yield stage
        (stage / SYNTH_MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        for child in root.iterdir():
            if child != stage:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for child in stage.iterdir():
            os.replace(child, root / child.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
