"""Temporal confirmation: false alarms against delay, on synthetic camera sequences with one-frame transients.

    .venv/bin/python benchmarks/alarm_tradeoff.py --onnx runs/demo/build/export/student.onnx --out runs/alarms

Each sequence (`wildfire-kd synth --sequence`) is one camera: a plume that appears at frame 12 and grows, and 8
single frames with a transient (a smoke-like cloud wisp or a sun glare). The model runs once per frame; the
detections are then replayed through `Confirmer` for each (k, n): an alarm is true when it overlaps the plume in
a frame where the plume is there, false otherwise. Reported per (k, n): false alarms per 100 frames, plumes
alarmed, and the delay from the plume's first frame to its first alarm (frames). Writes RESULTS.md and
results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from wildfire_kd.reports import write_markdown

GRID = [(1, 1), (2, 2), (2, 3), (3, 5), (4, 6), (5, 8)]


def _sequence_detections(model, frames: list[Path], conf: float) -> list[list]:
    import cv2

    return [model.detect(cv2.imread(str(f)), conf=conf) for f in frames]


def _score(alarms, truth: dict, frames: list[Path]) -> dict:
    import numpy as np

    from wildfire_kd.edge.boxes import box_iou

    plume = truth["plume"]
    true_frames, false = [], 0
    for a in alarms:
        box = plume["boxes"].get(a.frame)
        if box is not None and box_iou(np.array([a.detection.box]), np.array([box]))[0, 0] >= 0.1:
            true_frames.append(a.frame)
        else:
            false += 1
    names = [f.name for f in frames]
    start = plume["start"]
    delay = names.index(true_frames[0]) - start if true_frames else None
    return {"false_alarms": false, "alarmed": bool(true_frames), "delay": delay}


def _row(key: str, r: dict, sequences: int) -> str:
    def frames(v: int | None) -> str:
        return "–" if v is None else str(v)

    return (
        f"| {key} | {r['false_alarms_per_100_frames']:.2f} | {r['plumes_alarmed']}/{sequences} | "
        f"{frames(r['median_delay_frames'])} | {frames(r['max_delay_frames'])} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, help="student.onnx trained on the synthetic painter's images")
    parser.add_argument("--out", type=Path, default=Path("runs/alarms"))
    parser.add_argument("--sequences", type=int, default=10)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--imgsz", type=int, default=160, help="frame size (the synthetic dataset's)")
    parser.add_argument("--conf", type=float, default=None, help="default: the model's operating point")
    args = parser.parse_args()

    from wildfire_kd.edge.alarms import Confirmer
    from wildfire_kd.edge.model import CameraModel
    from wildfire_kd.layout import SEQUENCE_TRUTH
    from wildfire_kd.synth import synthesize_sequence

    model = CameraModel(args.onnx)
    conf = model.default_conf if args.conf is None else args.conf
    runs = []
    for seed in range(args.sequences):
        folder = synthesize_sequence(args.out / f"seq{seed}", frames=args.frames, imgsz=args.imgsz, seed=seed)
        frames = sorted(folder.glob("*.jpg"))
        truth = json.loads((folder.parent / SEQUENCE_TRUTH).read_text())
        runs.append((frames, truth, _sequence_detections(model, frames, conf)))

    rows = {}
    for k, n in GRID:
        scores = []
        for frames, truth, detections in runs:
            confirmer, alarms = Confirmer(k=k, n=n), []
            for frame, dets in zip(frames, detections, strict=True):
                alarms += confirmer.update(frame.name, dets)
            scores.append(_score(alarms, truth, frames))
        delays = [s["delay"] for s in scores if s["delay"] is not None]
        total_frames = args.sequences * args.frames
        rows[f"{k}/{n}"] = {
            "false_alarms_per_100_frames": 100 * sum(s["false_alarms"] for s in scores) / total_frames,
            "plumes_alarmed": sum(s["alarmed"] for s in scores),
            "median_delay_frames": statistics.median(delays) if delays else None,
            "max_delay_frames": max(delays) if delays else None,
        }
    transient_frames = sum(len(t["distractors"]) for _, t, _ in runs)
    fooled = sum(
        1
        for frames, t, dets in runs
        for f, d in zip(frames, dets, strict=True)
        if f.name in t["distractors"] and f.name not in t["plume"]["boxes"] and d
    )
    report = {
        "onnx": args.onnx,
        "conf": conf,
        "sequences": args.sequences,
        "frames": args.frames,
        "rows": rows,
        "transient_frames": transient_frames,
        "transient_frames_with_a_detection": fooled,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"`{args.onnx}` at conf {conf:g}; {args.sequences} sequences of {args.frames} frames ({args.imgsz} px), "
        f"a plume from frame 12; {fooled} of the {transient_frames} frames with a transient got a detection without "
        "a plume.",
        "",
        "| k of n | false alarms / 100 frames | plumes alarmed | median delay (frames) | worst delay |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [_row(key, r, args.sequences) for key, r in rows.items()]
    print(write_markdown(args.out / "RESULTS.md", lines))


if __name__ == "__main__":
    main()
