"""The camera path on tower-camera sequences: minutes to detection, false alarms per camera-day, alerts per fire.

    .venv/bin/python benchmarks/alarm_tradeoff.py --weights runs/demo/build/train/weights/best.pt --out runs/alarms

Sequences: `wildfire-kd synth --sequence` (every other one a fire a few pixels wide at onset that grows, drifts with
the wind and lifts off its source; the others a cloud, haze, a fog bank or a low sun that persists; in every view a
static smoke-like artefact outside the mask (a glare blob near a corner, a haze patch at the edge), a lens vignette
and a mast; each view's smoke-free history), unless --sequences names a folder. The detector is exported at each
--imgsz, and each camera profile (each size with the whole frame, the first size with --tiles) runs every frame once
through CameraModel and the camera's mask; the camera path (edge/camera.py) is then replayed over those detections
with its parts switched off and on: static suppression (off, on from a cold start, on seeded from the view's
history), one event per fire (off, on), under the default alarm rule, and with everything on under the rule
`validate` would choose (within --budget false alarms per camera-day). Reported per profile and setting: fire
sequences found, median minutes from onset to the first alert on the plume, false alarms per camera-day, alerts per
fire found, detections suppressed; per profile the cost per frame. Writes RESULTS.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from wildfire_kd.reports import write_markdown

SETTINGS = {  # (static suppression, seeded from the history, events)
    "bare alarm rule": (False, False, False),
    "+ static (cold start)": (True, False, False),
    "+ events": (False, False, True),
    "+ static + events (cold start)": (True, False, True),
    "+ static (seeded) + events": (True, True, True),
}


def _export(weights: str, imgsz: int, out: Path) -> Path:
    command = [sys.executable, "-m", "wildfire_kd.cli", "export", "--weights", weights, "--imgsz", str(imgsz)]
    subprocess.run([*command, "--out", str(out)], check=True, capture_output=True)
    return out / "student.onnx"


def _v(x, spec=".3f") -> str:
    return "–" if x is None else f"{x:{spec}}"


def _row(name: str, f) -> str:
    return (
        f"| {name} | {f.true_positives}/{f.positives} | {_v(f.median_minutes_to_detection, '.1f')} | "
        f"{_v(f.false_alarms_per_camera_day, '.2f')} | {_v(f.alerts_per_fire, '.2f')} | {f.suppressed} |"
    )


def _memories(model, history: Path, sequences, floor: float, tiles):
    """Each view's static memory, learnt from its smoke-free history (the frames before its sequence)."""
    import cv2

    from wildfire_kd.edge.static import StaticMemory

    memories = {}
    for s in sequences:
        folder = history / s.name
        if not folder.is_dir():
            continue
        memory, frames = StaticMemory(), sorted(folder.iterdir())
        for i, frame in enumerate(frames):
            image = cv2.imread(str(frame))
            n, _ = model.tiles_for(image.shape[1], image.shape[0], tiles)
            found = model.detect(image, conf=floor, tiles=n)
            memory.learn(s.frames[0].time - (len(frames) - i) * 60.0, found)
        memories[s.name] = memory
    return memories


def _profile(label, model, sequences, args, tiles) -> tuple[list[str], dict]:
    from wildfire_kd.edge.alarms import DEFAULT_RULE
    from wildfire_kd.edge.camera import CameraSettings
    from wildfire_kd.edge.sequence_figures import choose_rule, detections_of, early_plume_recall, figures

    start = time.perf_counter()
    found = detections_of(model, sequences, conf=args.floor, iou=0.7, tiles=tiles)
    per_frame_ms = 1000 * (time.perf_counter() - start) / sum(len(s.frames) for s in sequences)
    memories = _memories(model, args.history, sequences, args.floor, tiles) if args.history.is_dir() else {}
    results = {"ms_per_frame": per_frame_ms, "small_recall": early_plume_recall(sequences, found, args.small_minutes)}
    rows = []
    for name, (static, seeded, events) in SETTINGS.items():
        if seeded and not memories:
            continue
        camera = CameraSettings(
            DEFAULT_RULE, **({} if static else {"static": None}), **({} if events else {"events": None})
        )
        f = figures(sequences, found, camera, memories if seeded else None)
        rows.append(_row(f"{label} · {name}", f))
        results[name] = f.to_dict()
    rule, f = choose_rule(sequences, found, args.budget, args.floor)
    rows.append(_row(f"{label} · everything on, cold, rule chosen in-sample: {rule.describe()}", f))
    results["chosen"] = f.to_dict()
    if memories:
        f = figures(sequences, found, CameraSettings(rule), memories)
        rows.append(_row(f"{label} · everything on, seeded, the chosen rule", f))
        results["chosen_seeded"] = f.to_dict()
    return rows, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the detector .pt (e.g. a build's train/weights/best.pt)")
    parser.add_argument("--out", type=Path, default=Path("runs/alarms"))
    parser.add_argument("--sequences", type=Path, default=None, help="a folder of sequences (default: synthesize)")
    parser.add_argument("--count", type=int, default=12, help="synthetic sequences (half of them fires)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640, 1024])
    parser.add_argument("--tiles", default="3", help="tiles at the first --imgsz (a number, or auto)")
    parser.add_argument("--budget", type=float, default=1.0, help="false alarms per camera-day for the chosen rule")
    parser.add_argument("--floor", type=float, default=0.05, help="the lowest per-frame confidence a rule may see")
    parser.add_argument("--small-minutes", type=float, default=10.0, help="a plume counts as small this long")
    args = parser.parse_args()
    from wildfire_kd.edge.model import CameraModel
    from wildfire_kd.edge.options import tiles_value
    from wildfire_kd.edge.sequences import load_sequences

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    folder = args.sequences
    if folder is None:
        from wildfire_kd.synth_sequences import synthesize_sequences

        folder = out / "sequences"
        synthesize_sequences(folder, args.count, args.frames, args.width, force=True)
    args.history = Path(folder) / "history"
    sequences = load_sequences(folder)
    models = {size: CameraModel(_export(args.weights, size, out / f"export-{size}")) for size in args.imgsz}
    first, tiles = args.imgsz[0], tiles_value(args.tiles)
    profiles = [(f"{size} px", models[size], 1) for size in args.imgsz]
    profiles.insert(1, (f"{first} px, {tiles} tiles", models[first], tiles))
    rows, results = [], {}
    for label, model, n in profiles:
        print(f"{label} ...", flush=True)
        profile_rows, results[label] = _profile(label, model, sequences, args, n)
        rows += profile_rows
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    positives = sum(s.positive for s in sequences)
    cost = [f"| {label} | {r['ms_per_frame']:.0f} | {_v(r['small_recall'])} |" for label, r in results.items()]
    lines = [
        f"# The camera path on {len(sequences)} sequences ({positives} fires), {args.width} px frames",
        "",
        "| profile · camera path | fires found | median minutes to alert | false alarms / camera-day | alerts per fire "
        "| suppressed |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"| profile | ms per frame (read, infer, mask) | plume seen in its first {args.small_minutes:g} minutes |",
        "|---|---:|---:|",
        *cost,
    ]
    print(write_markdown(out / "RESULTS.md", lines))


if __name__ == "__main__":
    main()
