"""Distillation on real photographs: fire8 (../shared/datasets/fire8), the real published teacher finetuned on it,
then the student trained plain, with the default dense KD and with ultralytics' feature KD, over seeds.

    # CPU, reduced size: checks that the real-data path works end to end (about 20 minutes on 2 cores)
    .venv/bin/python benchmarks/real_compare.py --out runs/real-cpu
    # a GPU at 640: the measurement (one prepared run: teacher finetune, then plain / dense / feature, 2 seeds)
    .venv/bin/python benchmarks/real_compare.py --out runs/real-gpu --imgsz 640 --train-images 0 --val-images 0 \\
        --negatives 40 --finetune-epochs 30 --epochs 60 --batch 32 --device 0 --seeds 0 1

Steps: (1) a copy of fire8 cut to --train-images / --val-images (0: all; --classes smoke keeps only smoke, as a
smoke-only camera network labels it), with --negatives background training images moved out of training into a
folder of smoke-free frames, so false alarms per 1000 frames are measured on frames no model trained on (fire8's val
split has no background image); (2) `wildfire-kd finetune` of the teacher (pinned, its blocks' module given),
scored before and after on val; (3) per method and seed, `wildfire-kd train` from scratch against the finetuned
teacher, ending with the student-vs-teacher validation at the student's operating point. Writes RESULTS.md and
results.json: mAP50, mAP50-95, recall of small objects and false alarms per 1000 smoke-free frames, student and
teacher, mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from wildfire_kd.reports import write_markdown

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
METHODS = {
    "plain": ["--set", "distill.response=false"],
    "dense": [],  # the default distillation
    "feature": ["--set", "distill.response=false", "--set", "distill.feature_distillation=true"],
}
FIGURES = ("map50", "map50_95", "small_recall", "false_alarms_per_1000")


def subset(
    src: Path, out: Path, classes: list[str] | None = None, train: int = 0, val: int = 0, negatives: int = 0
) -> Path:
    """A copy of the YOLO dataset ``src`` (data.yaml with names) cut to ``train`` / ``val`` images (0: all), with only
    the rows of ``classes`` (renumbered in that order; images without any of them are dropped, background images
    kept), and ``negatives`` background training images moved to OUT/negatives. Deterministic. Returns data.yaml."""
    import yaml

    meta = yaml.safe_load((src / "data.yaml").read_text())
    names = [meta["names"][k] for k in sorted(meta["names"])]
    keep = classes or names
    ids = {names.index(c): i for i, c in enumerate(keep)}
    if out.exists():
        shutil.rmtree(out)
    for split, count in (("train", train), ("val", val)):
        chosen = _rows_of(src, split, ids)
        background = sorted(p for p, rows in chosen.items() if not rows)
        if split == "train" and negatives:
            (out / "negatives").mkdir(parents=True)
            for image in background[:negatives]:
                shutil.copyfile(image, out / "negatives" / image.name)
                del chosen[image]
        images = sorted(chosen)
        random.Random(0).shuffle(images)
        for image in sorted(images[:count] if count else images):
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, out / "images" / split / image.name)
            (out / "labels" / split / f"{image.stem}.txt").write_text(chosen[image])
    (out / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/val", "names": dict(enumerate(keep))})
    )
    return out / "data.yaml"


def _rows_of(src: Path, split: str, ids: dict[int, int]) -> dict[Path, str]:
    """Each image of ``split`` -> its label rows of the kept classes, renumbered; images whose labels held only other
    classes are left out (they would teach "not smoke" on a fire)."""
    found = {}
    for image in sorted((src / "images" / split).glob("*.jpg")):
        label = src / "labels" / split / f"{image.stem}.txt"
        rows = [r.split() for r in (label.read_text().splitlines() if label.is_file() else []) if r.strip()]
        kept = [" ".join([str(ids[int(r[0])]), *r[1:]]) for r in rows if int(r[0]) in ids]
        if rows and not kept:
            continue
        found[image] = "".join(f"{r}\n" for r in kept)
    return found


def smoke_subset(src: Path, out: Path, train: int = 24, val: int = 8) -> Path:
    """fire8 as a smoke-only camera network labels it: smoke boxes only, images with smoke (and background)."""
    return subset(src, out, ["smoke"], train=train, val=val)


def _cli(*args: str) -> None:
    command = [sys.executable, "-m", "wildfire_kd.cli", *args]
    r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode not in (0, 1):  # 1: a gate failed, the figures are still there
        raise SystemExit(f"{' '.join(command)} failed ({r.returncode}):\n{r.stderr[-3000:]}")


def _student_figures(run: Path) -> dict[str, dict[str, float | None]]:
    """Student and teacher figures of a run's after-train validation."""
    v = json.loads((run / "validation" / "validation.json").read_text())
    camera = v["camera_figures"]
    return {
        role: {
            "map50": v[role]["map50"],
            "map50_95": v[role]["map50_95"],
            "small_recall": camera[role]["recall_by_size"]["small"]["recall"],
            "false_alarms_per_1000": camera[role]["false_alarms_per_1000"],
        }
        for role in ("student", "teacher")
    }


def _mean_std(values: list[float | None]) -> tuple[float | None, float]:
    known = [v for v in values if v is not None]
    if not known:
        return None, 0.0
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else 0.0


def _cell(values: list[float | None], digits: int = 3) -> str:
    mean, std = _mean_std(values)
    if mean is None:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def _table(results: dict[str, list[dict]], finetuned: dict) -> list[str]:
    lines = [
        "| model | mAP50 | mAP50-95 | recall, small objects | false alarms / 1000 smoke-free frames |",
        "|---|---:|---:|---:|---:|",
    ]
    for role in ("before", "after"):
        scores = finetuned[role]
        lines.append(f"| teacher, {role} finetuning | {scores['map50']:.3f} | {scores['map50_95']:.3f} | – | – |")
    teacher = next(iter(results.values()))[0]["teacher"]  # the finetuned teacher, at the student's operating point
    small, alarms = _cell([teacher["small_recall"]]), _cell([teacher["false_alarms_per_1000"]], 1)
    lines.append(
        f"| teacher (finetuned), at the student's operating point | {teacher['map50']:.3f} | "
        f"{teacher['map50_95']:.3f} | {small} | {alarms} |"
    )
    for method, runs in results.items():
        cells = [_cell([r["student"][k] for r in runs], 1 if k.startswith("false") else 3) for k in FIGURES]
        lines.append(f"| student, {method} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "fire8", help="the YOLO dataset's folder")
    parser.add_argument("--teacher", type=Path, default=SHARED / "teachers" / "light_yolov8_flame.pt")
    parser.add_argument("--teacher-modules", default=str(SHARED / "teachers" / "fire_detector_modules.py"))
    parser.add_argument("--teacher-sha256", default="2185fb9bc19a1cb641f993fff4f4368ac2c90b645d7a17ba2af8ebdc95878354")
    parser.add_argument("--out", type=Path, default=Path("runs/real-cpu"))
    parser.add_argument("--classes", default=None, help="comma-separated classes to keep (default: all)")
    parser.add_argument("--train-images", type=int, default=240)
    parser.add_argument("--val-images", type=int, default=0)
    parser.add_argument("--negatives", type=int, default=40)
    parser.add_argument("--imgsz", type=int, default=192)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    classes = args.classes.split(",") if args.classes else None
    data = subset(args.data, out / "data", classes, args.train_images, args.val_images, args.negatives)
    common = ["--imgsz", str(args.imgsz), "--batch", str(args.batch), "--device", args.device]
    common += ["--set", "train.plots=false", "--set", "validation.min_map50_retention=null"]
    common += ["--set", f"validation.negatives={out / 'data' / 'negatives'}"] if args.negatives else []

    _cli("finetune", "--data", str(data), "--teacher", str(args.teacher), "--teacher-modules", args.teacher_modules,
         "--out", str(out), "--epochs", str(args.finetune_epochs), "--device", args.device,
         "--set", f"train.teacher_sha256={args.teacher_sha256}", "--set", f"finetune.imgsz={args.imgsz}",
         "--set", f"finetune.batch={args.batch}", "--set", "train.exist_ok=true",
         "--set", "train.plots=false")  # fmt: skip
    finetuned = json.loads((out / "teacher" / "finetune.json").read_text())
    teacher = finetuned["best"]
    from wildfire_kd.weights import sha256_file

    results: dict[str, list[dict]] = {}
    for method in args.methods.split(","):
        for seed in args.seeds:
            name = f"{method}-s{seed}"
            print(f"training {name} ...", flush=True)
            _cli("train", "--data", str(data), "--teacher", teacher, "--teacher-modules", args.teacher_modules,
                 "--out", str(out), "--name", name, "--epochs", str(args.epochs), *common, *METHODS[method],
                 "--set", f"train.teacher_sha256={sha256_file(teacher)}", "--set", f"train.seed={seed}",
                 "--set", "train.exist_ok=true", "--set", "train.patience=0")  # fmt: skip
            results.setdefault(method, []).append(_student_figures(out / name))
    (out / "results.json").write_text(json.dumps({"finetune": finetuned, "runs": results}, indent=2))
    lines = [
        f"# Real photographs: {args.data.name}, imgsz {args.imgsz}, {args.epochs} epochs, seeds {args.seeds}",
        "",
        f"Teacher `{args.teacher.name}` finetuned {finetuned['epochs_completed']} epochs; students from scratch "
        "(yolov8n.yaml), each validated against the finetuned teacher.",
        "",
        *_table(results, finetuned),
    ]
    print(write_markdown(out / "RESULTS.md", lines))


if __name__ == "__main__":
    main()
