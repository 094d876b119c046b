"""What unlabelled frames are worth (issue 28): the student trained four ways on few labels, the same teacher for all.

    .venv/bin/python benchmarks/unlabeled_compare.py --out runs/unlabeled --seeds 0 1 2 --jobs 2   # CPU, hours

On the synthetic generator, per regime (L: 60 labelled train images + 600 unlabelled frames, M: 300 + 1500; val 150
each), the student from yolov8n.yaml:
  plain     trained on the labelled images alone (no teacher)
  kd        the default dense KD on the labelled images
  kd_pool   the same plus the unlabelled pool (--unlabeled), one row per --ratios value (distill.unlabeled_ratio;
            "all" = the whole pool once per epoch)
  ceiling   plain training on the labelled images and the pool with its labels (what labelling everything buys)
The teacher (a yolov8s) is trained first on a labelled set of its own (another seed of the generator: never the pool's
or val's frames), as a published teacher is trained on data other than yours. Every row is validated against it
with the same smoke-free frames added (a separate set of the generator's distractor frames: cloud, haze, glare, dust).
Writes RESULTS.md and results.json into --out: mAP50-95, false alarms per 1000 smoke-free frames at the student's
operating point, small-object recall, median optimizer-step time and seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_compare import ENV, _run, _train_args  # noqa: E402

from wildfire_kd.reports import write_markdown  # noqa: E402

REGIMES = {"L": (60, 600), "M": (300, 1500)}  # labelled train images, unlabelled frames
VAL_IMAGES = 150
SEEDS = {"teacher": 101, "negatives": 102, "L": 201, "M": 202}  # each set its own generator seed: no shared frame


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "wildfire_kd.cli", *args]


def _synth(out: Path, *args: str) -> Path:
    if not (out / "data.yaml").is_file():
        _run(_cli("synth", str(out), *args))
    return out / "data.yaml"


def teacher(args) -> str:
    """The yolov8s teacher, trained on a labelled set of its own (reused when the run folder holds it)."""
    best = args.out / "teacher" / "weights" / "best.pt"
    if best.is_file():
        return str(best)
    data = _synth(args.out / "teacher_data", "--train-images", str(args.teacher_images), "--val-images", "50",
                  "--seed", str(SEEDS["teacher"]))  # fmt: skip
    cmd = _train_args(args, str(data), "teacher", SEEDS["teacher"])
    cmd += ["--student", "yolov8s.yaml", "--epochs", str(args.teacher_epochs), "--set", "distill.response=false"]
    _run(cmd)
    return str(best)


def negatives(args) -> Path:
    """Smoke-free frames of the generator's distractors, for the false-alarm figure of every row."""
    _synth(args.out / "negatives", "--train-images", "1", "--val-images", str(args.negatives), "--seed",
           str(SEEDS["negatives"]), "--set", "synth.distractor_frames=1.0")  # fmt: skip
    return args.out / "negatives" / "images" / "val"


def regime_data(args, regime: str) -> tuple[Path, Path, Path]:
    """(data.yaml, the pool's folder, the all-labelled data.yaml: labelled train + the pool with its labels)."""
    labelled, pool = REGIMES[regime]
    root = args.out / regime
    data = _synth(root / "data", "--train-images", str(labelled), "--val-images", str(VAL_IMAGES), "--unlabeled",
                  str(pool), "--seed", str(SEEDS[regime]))  # fmt: skip
    ceiling = root / "ceiling"
    if not (ceiling / "data.yaml").is_file():
        images, labels = ceiling / "images" / "pool", ceiling / "labels" / "pool"
        shutil.rmtree(ceiling, ignore_errors=True)
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for frame in sorted((root / "data" / "unlabeled").iterdir()):
            os.symlink(frame.resolve(), images / frame.name)
            shutil.copyfile(root / "data" / "unlabeled_labels" / f"{frame.stem}.txt", labels / f"{frame.stem}.txt")
        names = (root / "data" / "data.yaml").read_text().split("names:", 1)[1]
        (ceiling / "data.yaml").write_text(
            f"train: [{root / 'data' / 'images' / 'train'}, {images}]\nval: {root / 'data' / 'images' / 'val'}\n"
            f"names:{names}"
        )
    return data, root / "data" / "unlabeled", ceiling / "data.yaml"


def rows(args, regime: str) -> dict[str, tuple[Path, list[str]]]:
    """Each row's data.yaml and its extra options."""
    data, pool, ceiling = regime_data(args, regime)
    labelled, size = REGIMES[regime]
    plain = ["--set", "distill.response=false"]
    table = {"plain": (data, plain), "kd": (data, [])}
    for ratio in args.ratios:
        value = size / labelled if ratio == "all" else float(ratio)
        table[f"kd_pool_r{value:g}"] = (data, ["--unlabeled", str(pool), "--set", f"distill.unlabeled_ratio={value:g}"])
    table["ceiling"] = (ceiling, plain)
    return table


def figures(run: Path) -> dict:
    train = json.loads((run / "train.json").read_text())
    val = json.loads((run / "validation" / "validation.json").read_text())
    log = [json.loads(line) for line in (run / "batch_log.jsonl").read_text().splitlines()]
    steps = [r["seconds"] for r in log if r["optimizer_step"] and not r["skipped"]]
    camera = val["camera_figures"]
    return {
        "map50": val["student"]["map50"],
        "map50_95": val["student"]["map50_95"],
        "teacher_map50_95": val["teacher"]["map50_95"],
        "false_alarms_per_1000": camera["student"]["false_alarms_per_1000"],
        "smoke_free_frames": camera["student"]["negative_frames"],
        "small_recall": camera["student"]["recall_by_size"]["small"]["recall"],
        "conf": camera["conf"],
        "median_step_s": statistics.median(steps),
        "seconds_per_epoch": train["seconds"] / train["epochs_completed"],
        "train_seconds": train["seconds"],
    }


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def aggregate(per_seed: list[dict]) -> dict:
    out = {k: _mean([r[k] for r in per_seed]) for k in per_seed[0]}
    for k in ("map50_95", "false_alarms_per_1000", "small_recall"):
        kept = [r[k] for r in per_seed if r[k] is not None]
        out[f"{k}_std"] = statistics.stdev(kept) if len(kept) > 1 else 0.0
    out["seeds"] = len(per_seed)
    return out


def _cell(r: dict, key: str, spec: str = ".3f") -> str:
    value, std = r.get(key), r.get(f"{key}_std")
    if value is None:
        return "–"
    return f"{value:{spec}} ± {std:{spec}}" if r["seeds"] > 1 and std is not None else f"{value:{spec}}"


def table(regime: str, results: dict[str, dict]) -> list[str]:
    base = results["plain"]["map50_95"]
    ceiling = results["ceiling"]["map50_95"]
    kd = results["kd"]["map50_95"]
    lines = [
        f"Regime {regime}: {REGIMES[regime][0]} labelled + {REGIMES[regime][1]} unlabelled, val {VAL_IMAGES}.",
        "",
        "| row | mAP50-95 | Δ vs kd | gap closed (plain → ceiling) | false alarms / 1000 smoke-free | "
        "recall, small | median step s | s / epoch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        closed = (r["map50_95"] - base) / (ceiling - base) if ceiling != base else None
        lines.append(
            f"| {name} | {_cell(r, 'map50_95')} | {r['map50_95'] - kd:+.3f} | "
            f"{'–' if closed is None else f'{closed:.0%}'} | {_cell(r, 'false_alarms_per_1000', '.1f')} | "
            f"{_cell(r, 'small_recall')} | {r['median_step_s']:.3f} | {r['seconds_per_epoch']:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/unlabeled"))
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--ratios", nargs="+", default=["1", "3", "all"], help="distill.unlabeled_ratio per row")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", default=None, help="comma-separated rows to run (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (times compare within one setting)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--teacher-epochs", type=int, default=60)
    parser.add_argument("--teacher-images", type=int, default=400)
    parser.add_argument("--negatives", type=int, default=300, help="smoke-free frames added to every validation")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--optimizer", default="AdamW")
    parser.add_argument("--lr0", type=float, default=0.002)
    parser.add_argument("--nbs", type=int, default=None)
    parser.add_argument("--scale", type=float, default=1.0, help="every set's size x this (a quick check: 0.1)")
    args = parser.parse_args()
    for regime, sizes in REGIMES.items():
        REGIMES[regime] = tuple(max(2, round(n * args.scale)) for n in sizes)
    global VAL_IMAGES
    VAL_IMAGES = max(4, round(VAL_IMAGES * args.scale))
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update(ENV)
    teacher_pt, smoke_free = teacher(args), negatives(args)
    tables = {regime: rows(args, regime) for regime in args.regimes}
    only = set(args.only.split(",")) if args.only else None
    jobs = [(regime, name, seed) for seed in args.seeds for regime in args.regimes for name in tables[regime]
            if only is None or name in only]  # fmt: skip

    def train_one(job):
        regime, name, seed = job
        data, extra = tables[regime][name]
        run = args.out / regime / f"{name}-s{seed}"
        if not (run / "train.json").is_file():
            print(f"training {regime}/{name} seed {seed} ...", flush=True)
            cmd = _train_args(args, str(data), f"{regime}/{name}-s{seed}", seed) + ["--teacher", teacher_pt, *extra]
            _run(cmd + ["--set", f"validation.negatives={smoke_free}"])
        return job, figures(run)

    per_seed: dict[str, dict[str, list[dict]]] = {regime: {} for regime in args.regimes}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for (regime, name, _), result in pool.map(train_one, jobs):
            per_seed[regime].setdefault(name, []).append(result)
    results = {
        regime: {name: aggregate(per_seed[regime][name]) for name in tables[regime] if name in per_seed[regime]}
        for regime in args.regimes
    }
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "teacher": teacher_pt, "results": results,
              "per_seed": per_seed}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"Teacher `{teacher_pt}`; {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, {args.optimizer} lr0 "
        f"{args.lr0}, seeds {' '.join(map(str, args.seeds))}, {args.jobs} training(s) at once; {args.negatives} extra "
        "smoke-free frames in every validation. mean ± sample std over the seeds.",
        "",
    ]
    for regime in args.regimes:
        if {"plain", "kd", "ceiling"} <= set(results[regime]):
            lines += table(regime, results[regime]) + [""]
    print(write_markdown(args.out / "RESULTS.md", lines))


if __name__ == "__main__":
    main()
