"""Synthetic tower-camera sequences (`wildfire-kd synth --sequence`): what a camera network judges a detector on.

A fixed wide view (a ridge under the sky, a dark lens vignette in the corners, a mast with a dish), one frame every
``interval`` seconds with fresh sensor noise. Fire sequences (``fire_NN``): from onset a plume a few pixels wide at
the foot of the ridge grows over tens of minutes; their frames carry HPWREN's names
(``<unix>_<±seconds from ignition>.jpg``). Smoke-free sequences (``clear_NN``): a distractor that persists and evolves
over many frames (a drifting cloud, haze, a fog bank, a low sun), the false alarms camera networks fear. Each folder:
the frames, ``frames.csv`` (file, time, smoke, the plume's box) and ``mask.png`` (the camera's own ignore regions:
the vignette's dark corners and the mast). Same arguments, same files.

What real towers add, and the camera path must handle (``static_distractors``, on by default): each view has a static
artefact that looks like smoke to a detector and never changes, outside the hand-drawn mask (a bright smoke-coloured
glare blob near a corner, or a haze patch at the frame's edge); and a fire's plume drifts with the wind and, grown,
lifts off its source, so its box rises out of its first position (IoU-based identity breaks; one event per fire must
hold it). ``history/<camera>/`` holds frames of each view from before its sequence, smoke-free: what a camera that has
been watching knows of its artefacts (``detect --learn-static OUT/history``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .layout import MASK_IMAGE, SEQUENCE_FRAMES

START_UNIX = 1_717_200_000  # 2024-06-01 00:00 UTC: the first frame's time (names are deterministic)
DISTRACTORS = ("cloud", "haze", "fog bank", "low sun")
ONSET_PX = 0.004  # a plume's width at onset, of the frame's width: 8 px at 2048, 3 px after a downscale to 640
FULL_PX = 0.06  # its width once grown
GROWTH_FRAMES = 25  # frames it takes to grow (25 minutes at a frame a minute)
MIN_FRAMES = 8
HISTORY_FRAMES = 12  # the smoke-free frames of each view before the sequence (history/<camera>/)
HISTORY_DIR = "history"
ARTEFACTS = ("glare blob", "edge haze")  # the static distractors, by camera
DRIFT = 0.6  # a plume's sideways drift over its growth, in full plume widths (the wind)
LIFT = 1.2  # ... and how far it lifts off its source by the end, in full plume heights


@dataclass
class Scene:
    base: np.ndarray  # HxWx3 float32: sky, ridge, ground, mast, before the vignette
    vignette: np.ndarray  # HxW factor (1 in the centre, dark in the corners)
    horizon: int
    ignore: np.ndarray  # HxW bool: the vignette's dark corners and the mast (the camera's mask)


def _scene(rng, width: int, height: int) -> Scene:
    """The camera's fixed view."""
    horizon = int(rng.uniform(0.42, 0.55) * height)
    sky, ground = rng.uniform(140, 210, 3), rng.uniform(45, 95, 3)
    ground[1] = max(ground[1], ground[0] + 8)  # vegetation leans green
    image = np.zeros((height, width, 3), dtype=np.float32)
    image[:horizon] = np.linspace(sky * 0.85, sky, horizon)[:, None, :]
    image[horizon:] = np.linspace(ground, ground * 0.7, height - horizon)[:, None, :]
    ridge = horizon - (0.04 * height * (1 + np.sin(np.linspace(0, rng.uniform(2, 5) * np.pi, width)))).astype(int)
    rows = np.arange(height)[:, None]
    image[(rows >= ridge[None, :]) & (rows < horizon)] = ground * 0.8  # a far ridge: darker, under the sky
    ignore = np.zeros((height, width), dtype=bool)
    x = int(rng.choice([rng.uniform(0.04, 0.1), rng.uniform(0.9, 0.96)]) * width)
    half, top = max(2, int(0.004 * width)), int(0.3 * height)
    image[top:, x - half : x + half] = 25.0  # the mast
    dish = (np.arange(width)[None, :] - x) ** 2 / (0.025 * width) ** 2 + (rows - top) ** 2 / (0.02 * width) ** 2
    image[dish <= 1] = 35.0
    ignore[top:, x - 3 * half : x + 3 * half] = True
    ignore |= dish <= 1.6
    yy, xx = np.mgrid[0:height, 0:width]
    radius = np.hypot((xx - width / 2) / (width / 2), (yy - height / 2) / (height / 2)) / np.sqrt(2)
    vignette = (1.0 - 0.85 * np.clip((radius - 0.55) / 0.45, 0, 1) ** 2).astype(np.float32)
    return Scene(image, vignette, horizon, ignore | (vignette < 0.55))


def _plume(frame, rng_seed: int, base: tuple[float, float], width_px: float) -> tuple[float, ...]:
    """A plume rising from ``base`` (x, y), ``width_px`` wide, painted on ``frame`` (PIL); returns its box."""
    from PIL import Image, ImageFilter

    from .synth import paint_plume

    bw, bh = width_px, width_px * 1.6
    margin = int(max(4, bw * 0.2))
    layer = Image.new("RGBA", (int(bw) + 2 * margin, int(bh) + 2 * margin), (0, 0, 0, 0))
    x1, y1, x2, y2 = paint_plume(layer, np.random.default_rng(rng_seed), margin, margin, bw, bh)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(0.6, bw / 40)))
    left, top = int(base[0] - bw / 2) - margin, int(base[1] - bh) - margin
    frame.paste(layer, (left, top), layer)
    return left + x1, top + y1, left + x2, top + y2


def _distractor(frame, kind: str, t: float, rng, scene: Scene) -> None:
    """One persistent distractor at ``t`` (0..1 through the sequence), painted on ``frame`` (PIL)."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = frame.size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    if kind == "cloud":  # drifts across the sky, changing a little
        cx, cy = (rng.uniform(0.15, 0.35) + 0.4 * t) * w, rng.uniform(0.15, 0.32) * scene.horizon
        for i in range(6):
            dx, dy = (i - 2.5) * 0.025 * w, np.sin(i + 3 * t) * 0.012 * h
            r = (0.035 + 0.01 * np.sin(i * 1.7 + t * 4)) * w
            d.ellipse([cx + dx - r, cy + dy - r * 0.6, cx + dx + r, cy + dy + r * 0.6], fill=(238, 238, 242, 170))
    elif kind == "haze":  # a veil over the view, thickening and thinning
        alpha = int(50 + 70 * np.sin(np.pi * t))
        d.rectangle([0, 0, w, h], fill=(205, 205, 210, alpha))
    elif kind == "fog bank":  # low over the ground, rising and thickening
        top = scene.horizon - (0.02 + 0.05 * t) * h
        d.rectangle([0, top, w, scene.horizon + 0.12 * h], fill=(220, 222, 225, int(90 + 80 * t)))
    else:  # a low sun sinking towards the ridge, with its glare
        cx, cy, r = 0.7 * w, scene.horizon - (0.12 - 0.09 * t) * h, 0.025 * w
        for k, alpha in ((4.0, 40), (2.2, 90), (1.0, 240)):
            d.ellipse([cx - k * r, cy - k * r, cx + k * r, cy + k * r], fill=(255, 246, 210, alpha))
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(1.5, w / 300)))
    frame.paste(layer, (0, 0), layer)


def _artefact(frame, index: int, seed: int, scene: Scene) -> None:
    """The view's static artefact (ARTEFACTS[index % 2]), the same pixels in every frame: smoke-like to a detector,
    outside the camera's mask, never growing or moving."""
    from PIL import Image, ImageFilter

    from .synth import paint_plume

    w, h = frame.size
    rng = np.random.default_rng([seed, 14, index])
    if ARTEFACTS[index % len(ARTEFACTS)] == "glare blob":  # near a corner, where a lens flare or vignette sits
        bw, bh = rng.uniform(0.04, 0.06) * w, rng.uniform(0.05, 0.07) * h
        x0 = rng.choice([rng.uniform(0.1, 0.14), rng.uniform(0.82, 0.86)]) * w
        y0 = rng.uniform(0.12, 0.16) * h
    else:  # a haze patch at the frame's edge, around the horizon
        bw, bh = rng.uniform(0.035, 0.05) * w, rng.uniform(0.08, 0.11) * h
        x0 = rng.choice([rng.uniform(0.005, 0.02), rng.uniform(0.93, 0.945)]) * w
        y0 = scene.horizon - rng.uniform(0.06, 0.1) * h
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    paint_plume(layer, rng, x0, y0, bw, bh)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(0.8, bw / 40)))
    frame.paste(layer, (0, 0), layer)


def _plume_base(base: tuple[float, float], i: int, onset: int, frames: int, width: int, drift: float) -> tuple:
    """Where the plume's foot is in frame ``i``: drifting with the wind while it grows, lifting off its source once
    grown, so that its last boxes no longer overlap its first."""
    grown = min(1.0, (i - onset) / GROWTH_FRAMES)
    late = max(0.0, (i - onset - GROWTH_FRAMES / 2) / max(frames - onset - GROWTH_FRAMES / 2, 1))
    full_w = FULL_PX * width
    return base[0] + drift * DRIFT * full_w * grown, base[1] - LIFT * 1.6 * full_w * min(1.0, late)


def _write_sequence(
    folder: Path, index: int, frames: int, width: int, interval: float, seed: int, static: bool = True
) -> None:
    from PIL import Image

    rng = np.random.default_rng([seed, 11, index])
    height = width * 3 // 4
    scene = _scene(rng, width, height)
    positive = index % 2 == 0
    kind = DISTRACTORS[(index // 2) % len(DISTRACTORS)]
    onset = int(rng.integers(frames // 5, frames // 2)) if positive else None
    base = (rng.uniform(0.2, 0.8) * width, scene.horizon + rng.uniform(0.01, 0.06) * height)
    plume_seed = int(rng.integers(1 << 31))
    drift = float(np.random.default_rng([seed, 13, index]).choice([-1.0, 1.0])) if static else 0.0
    folder.mkdir(parents=True)
    Image.fromarray((scene.ignore * 255).astype(np.uint8)).save(folder / MASK_IMAGE)
    if static:
        _write_history(folder.parent / HISTORY_DIR / folder.name, scene, index, width, interval, seed)
    rows = []
    for i in range(frames):
        unix = START_UNIX + index * 86_400 + int(i * interval)
        pixels = (scene.base + rng.normal(0, 3, scene.base.shape)) * scene.vignette[..., None]
        frame = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        if static:
            _artefact(frame, index, seed, scene)
        box = None
        if onset is not None and i >= onset:
            grown = min(1.0, (i - onset) / GROWTH_FRAMES)
            foot = _plume_base(base, i, onset, frames, width, drift) if static else base
            box = _plume(frame, plume_seed, foot, (ONSET_PX + (FULL_PX - ONSET_PX) * grown) * width)
        if not positive:
            _distractor(frame, kind, i / max(frames - 1, 1), np.random.default_rng([seed, 12, index]), scene)
        name = f"{unix}_{int((i - onset) * interval):+06d}.jpg" if positive else f"{unix}.jpg"
        frame.save(folder / name, quality=90)
        rows.append([name, unix, int(box is not None), *(round(float(v), 1) for v in box or ())])
    with open(folder / SEQUENCE_FRAMES, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "time", "smoke", "x1", "y1", "x2", "y2"])
        writer.writerows(rows)


def _write_history(folder: Path, scene: Scene, index: int, width: int, interval: float, seed: int) -> None:
    """The view's HISTORY_FRAMES smoke-free frames from before the sequence: the artefact, no fire, no distractor."""
    from PIL import Image

    rng = np.random.default_rng([seed, 15, index])
    folder.mkdir(parents=True)
    for i in range(HISTORY_FRAMES):
        unix = START_UNIX + index * 86_400 - int((HISTORY_FRAMES - i) * interval)
        pixels = (scene.base + rng.normal(0, 3, scene.base.shape)) * scene.vignette[..., None]
        frame = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        _artefact(frame, index, seed, scene)
        frame.save(folder / f"{unix}.jpg", quality=90)


def synthesize_sequences(
    out: str | Path,
    sequences: int = 6,
    frames: int = 40,
    width: int = 2048,
    interval: float = 60.0,
    seed: int = 0,
    force: bool = False,
    static_distractors: bool = True,
) -> list[Path]:
    """Write ``sequences`` camera sequences (every other one with a fire) of ``frames`` frames ``width`` px wide
    into ``out``; returns their folders. ``out`` must be new or empty, or (``force``) an earlier synth output.
    ``static_distractors``: each view's static artefact, its history/ and plumes that drift and lift (the module's
    doc); off, the sequences of earlier versions."""
    from .synth import staged_output

    if frames < MIN_FRAMES:
        raise InputError(
            f"--frames {frames}: a sequence needs at least {MIN_FRAMES} frames (a fire's onset and growth)"
        )
    if sequences < 1 or width < 64 or interval <= 0:
        raise InputError(f"--sequences {sequences}, --width {width}, --interval {interval}: at least 1, 64 px, > 0 s")
    root = Path(out)
    marker = {"kind": "sequences", "sequences": sequences, "frames": frames, "width": width, "seed": seed}
    names = [f"{'fire' if index % 2 == 0 else 'clear'}_{index:02d}" for index in range(sequences)]
    with staged_output(root, force, marker | {"interval": interval, "static_distractors": static_distractors}) as stage:
        for index, name in enumerate(names):
            _write_sequence(stage / name, index, frames, width, interval, seed, static_distractors)
    return [root / name for name in names]
