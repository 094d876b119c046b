"""Alarm rules, masks and resolution on tower-camera sequences: minutes to detection and false alarms per camera-day.

    .venv/bin/python benchmarks/alarm_tradeoff.py --weights runs/demo/build/train/weights/best.pt --out runs/alarms

Sequences: `wildfire-kd synth --sequence` (every other one a fire a few pixels wide at onset, the others a cloud,
haze, a fog bank or a low sun that persists; a lens vignette and a mast in every view), unless --sequences names a
folder. The student is exported at each --imgsz (and run with --tiles over its first size); every frame goes through
the camera path once per setting (CameraModel, the camera's mask), and the alarm rules are replayed over those
detections (edge/sequence_figures.py): fixed rules beside the one `validate` would choose within --budget false
alarms per camera-day. Reported per setting and rule: fire sequences found, median minutes from onset to the alarm,
false alarms per camera-day, sequence precision / F1 / false-positive rate; per resolution the recall of the plume in
its first --small-minutes (when it is small) and the inference cost per frame. Writes RESULTS.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from wildfire_kd.reports import write_markdown

FIXED_RULES = {
    "count 1 of 1": {"mode": "count", "n": 1, "k": 1},
    "count 2 of 3": {"mode": "count", "n": 3, "k": 2},
    "count 3 of 5": {"mode": "count", "n": 5, "k": 3},
    "count 3 of 5, held to 0.5": {"mode": "count", "n": 5, "k": 3, "release": 0.5},
    "count 5 of 8": {"mode": "count", "n": 8, "k": 5},
    "score: mean 0.25 over 5, floor 0.1 (Pyronear-like)": {"mode": "score", "n": 5, "threshold": 1.25, "floor": 0.1},
    "score: mean 0.25 over 5, floor 0.1, held to 0.5": {
        "mode": "score", "n": 5, "threshold": 1.25, "floor": 0.1, "release": 0.5,
    },
    "score: mean 0.25 over 8, floor 0.1": {"mode": "score", "n": 8, "threshold": 2.0, "floor": 0.1},
}  # fmt: skip


def _export(weights: str, imgsz: int, out: Path) -> Path:
    command = [sys.executable, "-m", "wildfire_kd.cli", "export", "--weights", weights, "--imgsz", str(imgsz)]
    subprocess.run([*command, "--out", str(out)], check=True, capture_output=True)
    return out / "student.onnx"


def _smoke_free_detections(sequences, found, conf: float) -> int:
    """Detections at the operating point on frames without smoke: what a mask can remove before any alarm rule."""
    return sum(
        sum(d.confidence >= conf for d in dets or [])
        for s in sequences
        for frame, dets in zip(s.frames, found[s.name], strict=True)
        if not frame.smoke
    )


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _figures_row(name: str, f) -> str:
    def v(x, spec=".3f"):
        return "–" if x is None else f"{x:{spec}}"

    return (
        f"| {name} | {f.true_positives}/{f.positives} | {v(f.median_minutes_to_detection, '.1f')} | "
        f"{v(f.false_alarms_per_camera_day, '.2f')} | {v(f.precision)} | {v(f.f1)} | {v(f.false_positive_rate)} |"
    )


def _setting(label, model, sequences, args, tiles=1, masks=True) -> tuple[list[str], dict]:
    from wildfire_kd.edge.alarms import AlarmRule
    from wildfire_kd.edge.sequence_figures import choose_rule, detections_of, early_plume_recall, figures

    start = time.perf_counter()
    found = detections_of(model, sequences, conf=args.floor, iou=0.7, tiles=tiles, masks=masks)
    per_frame_ms = 1000 * (time.perf_counter() - start) / sum(len(s.frames) for s in sequences)
    rows, results = (
        [],
        {"ms_per_frame": per_frame_ms, "small_recall": early_plume_recall(sequences, found, args.small_minutes)},
    )
    conf = model.default_conf
    results["smoke_free_detections"] = _smoke_free_detections(sequences, found, conf)
    for name, fields in FIXED_RULES.items():
        rule = AlarmRule(**{"floor": conf, **fields})
        f = figures(sequences, found, rule)
        rows.append(_figures_row(f"{label} · {name}", f))
        results[name] = f.to_dict()
    rule, f = choose_rule(sequences, found, args.budget, args.floor)
    rows.append(_figures_row(f"{label} · chosen on all (in-sample): {rule.describe()}", f))
    results["chosen"] = f.to_dict()
    # held out: the rule chosen on one half of the sequences, judged on the other half, both ways
    halves = [sequences[0::2], sequences[1::2]]
    for i, (fit, judge) in enumerate((halves, halves[::-1])):
        rule, _ = choose_rule(fit, found, args.budget, args.floor)
        f = figures(judge, found, rule)
        rows.append(_figures_row(f"{label} · **chosen on half {1 - i}, judged on half {i}**: {rule.describe()}", f))
        results[f"held_out_{i}"] = f.to_dict()
    return rows, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the student .pt (e.g. a build's train/weights/best.pt)")
    parser.add_argument("--out", type=Path, default=Path("runs/alarms"))
    parser.add_argument("--sequences", type=Path, default=None, help="a folder of sequences (default: synthesize)")
    parser.add_argument("--count", type=int, default=12, help="synthetic sequences (half of them fires)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640, 1024])
    parser.add_argument("--tiles", type=int, default=3, help="tiles along the longer side, at the first --imgsz")
    parser.add_argument("--budget", type=float, default=1.0, help="false alarms per camera-day for the chosen rule")
    parser.add_argument("--floor", type=float, default=0.05, help="the lowest per-frame confidence a rule may see")
    parser.add_argument("--small-minutes", type=float, default=10.0, help="a plume counts as small this long")
    args = parser.parse_args()
    from wildfire_kd.edge.model import CameraModel
    from wildfire_kd.edge.sequences import load_sequences

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    folder = args.sequences
    if folder is None:
        from wildfire_kd.synth_sequences import synthesize_sequences

        folder = out / "sequences"
        synthesize_sequences(folder, args.count, args.frames, args.width, force=True)
    sequences = load_sequences(folder)
    models = {size: CameraModel(_export(args.weights, size, out / f"export-{size}")) for size in args.imgsz}
    first = args.imgsz[0]
    settings = [(f"{size} px", models[size], 1, True) for size in args.imgsz]
    settings += [(f"{first} px, {args.tiles} tiles", models[first], args.tiles, True)]
    settings += [(f"{first} px, no masks", models[first], 1, False)]
    rows, results = [], {}
    for label, model, tiles, masks in settings:
        print(f"{label} ...", flush=True)
        setting_rows, results[label] = _setting(label, model, sequences, args, tiles, masks)
        rows += setting_rows
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    positives = sum(s.positive for s in sequences)
    cost = [
        f"| {label} | {r['ms_per_frame']:.0f} | {_share(r['small_recall'])} | {r['smoke_free_detections']} |"
        for label, r in results.items()
    ]
    lines = [
        f"# Alarms on {len(sequences)} sequences ({positives} fires), {args.width} px frames",
        "",
        "| setting · rule | fires found | median minutes to alarm | false alarms / camera-day | precision | F1 | FPR |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"| setting | ms per frame (read, infer, mask) | plume seen in its first {args.small_minutes:g} minutes "
        "| detections on smoke-free frames |",
        "|---|---:|---:|---:|",
        *cost,
    ]
    print(write_markdown(out / "RESULTS.md", lines))


if __name__ == "__main__":
    main()
