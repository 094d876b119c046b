"""Distillation quality and cost: the student trained five ways with the same seed, budget and augmentation.

    .venv/bin/python benchmarks/distill_compare.py --out runs/bench                  # CPU scale, synthetic data
    .venv/bin/python benchmarks/distill_compare.py --data ../shared/datasets/fire8/data.yaml \\
        --teacher TEACHER.pt --imgsz 640 --epochs 50 --batch 32 --device 0 --out runs/bench-fire8   # a GPU

(a) no distillation, (b) ultralytics' feature distillation (distill_model), (c) our `pseudo` response KD with
the teacher's per-anchor class target, (d) our `dense` response KD, (e) (b) and (d) stacked; `--variant` adds
more (overrides on top of the config's defaults). Each variant is one `wildfire-kd train` process (so peak memory
is its own) ending with the student-vs-teacher validation. Writes RESULTS.md and results.json into --out: mAP50,
mAP50-95, retention, teacher agreement, seconds per epoch, median optimizer-step time, peak memory, and each
variant's cost as a ratio to (a) from this same run; then a profile of one KD step of each method split into its
parts. Without --teacher, a yolov8s teacher is trained from scratch on the data first (as `wildfire-kd demo` does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wildfire_kd.reports import write_markdown

VARIANTS = {
    "a_none": ["--set", "distill.response=false"],
    "b_feature": ["--set", "distill.response=false", "--set", "distill.feature_distillation=true"],
    "c_pseudo": ["--set", "distill.method=pseudo", "--set", "distill.cls_target=anchor"],
    "d_dense": ["--set", "distill.method=dense"],
    "e_dense_feature": ["--set", "distill.method=dense", "--set", "distill.feature_distillation=true"],
}
ENV = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}


def _run(cmd: list[str]) -> tuple[int, float]:
    """Run a command; returns (exit code, peak resident memory of that process in MiB)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # 1: a gate failed, the figures are still there
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read()[-3000:]}")
    return proc.returncode, usage.ru_maxrss / 1024


def _train_args(args, data: str, name: str, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "wildfire_kd.cli",
        "train",
        "--data",
        data,
        "--epochs",
        str(args.epochs),
        "--imgsz",
        str(args.imgsz),
        "--batch",
        str(args.batch),
        "--device",
        args.device,
        "--out",
        str(args.out),
        "--name",
        name,
        "--set",
        "train.exist_ok=true",
        "--set",
        "train.plots=false",
        "--set",
        f"train.seed={seed}",
        "--set",
        f"train.optimizer={args.optimizer}",
        "--set",
        f"train.lr0={args.lr0}",
        "--set",
        "train.warmup_epochs=1",
        "--set",
        f"train.close_mosaic={max(1, args.epochs // 5)}",
        "--set",
        "train.patience=0",
        "--set",
        f"train.ultralytics={{nbs: {args.nbs or args.batch}}}",
        "--set",
        "validation.min_map50_retention=null",
    ]


def _variant_figures(run: Path, peak_mb: float) -> dict:
    train = json.loads((run / "train.json").read_text())
    val = json.loads((run / "validation" / "validation.json").read_text())
    log = [json.loads(line) for line in (run / "batch_log.jsonl").read_text().splitlines()]
    steps = [r["seconds"] for r in log if r["optimizer_step"] and not r["skipped"]]
    return {
        "map50": val["student"]["map50"],
        "map50_95": val["student"]["map50_95"],
        "teacher_map50": val["teacher"]["map50"],
        "teacher_map50_95": val["teacher"]["map50_95"],
        "retention_map50": val["retention"]["map50"],
        "retention_map50_95": val["retention"]["map50_95"],
        "teacher_agreement": val["teacher_agreement"],
        "seconds_per_epoch": train["seconds"] / train["epochs_completed"],
        "median_step_s": statistics.median(steps),
        "peak_rss_mb": round(peak_mb, 1),
        "peak_gpu_mb": train.get("peak_gpu_memory_mb"),
    }


def profile_step(data: str, teacher_path: str, imgsz: int, batch: int, device: str, repeats: int = 20) -> dict:
    """Median seconds of each part of one response-KD step of each method, on real images of the val split."""
    from wildfire_kd.ultralytics_env import prepare_ultralytics

    prepare_ultralytics()
    import cv2
    import numpy as np
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import select_device

    from wildfire_kd.config import DistillSettings
    from wildfire_kd.data import class_names, label_path, split_images
    from wildfire_kd.distill.loss import make_criterion
    from wildfire_kd.edge.letterbox import letterbox
    from wildfire_kd.weights import load_detection_model

    dev = select_device(device, verbose=False)
    torch.set_num_threads(os.cpu_count() if dev.type == "cpu" else torch.get_num_threads())
    images, idx, cls, boxes = [], [], [], []
    for i, path in enumerate(split_images(data, "val")[:batch]):
        images.append(letterbox(cv2.imread(str(path)), imgsz)[0][0])
        label = label_path(path)
        rows = [r.split() for r in label.read_text().splitlines() if r.strip()] if label.is_file() else []
        for r in rows:  # square images letterbox without padding: normalised coordinates carry over
            idx.append(i)
            cls.append(float(r[0]))
            boxes.append([float(v) for v in r[1:5]])
    batch_dict = {
        "img": torch.from_numpy(np.stack(images)).to(dev),
        "batch_idx": torch.tensor(idx, dtype=torch.float32, device=dev),
        "cls": torch.tensor(cls, device=dev).view(-1, 1),
        "bboxes": torch.tensor(boxes, device=dev).view(-1, 4),
    }
    student = DetectionModel("yolov8n.yaml", nc=len(class_names(data)), verbose=False).to(dev).train()
    student.args = get_cfg()
    teacher = load_detection_model(teacher_path).fuse(verbose=False).to(dev).eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    methods = {
        "dense": DistillSettings(method="dense"),
        "pseudo": DistillSettings(method="pseudo", cls_target="anchor"),
    }
    profiles = {
        method: _profile_method(student, make_criterion(student, teacher, settings), batch_dict, sync, repeats)
        for method, settings in methods.items()
    }
    return {"device": str(dev), "batch": len(images), "imgsz": imgsz, "methods": profiles}


def _profile_method(student, crit, batch: dict, sync, repeats: int) -> dict:
    """Median seconds per part of one training step with ``crit`` (after 3 warm-up steps)."""
    import torch

    from wildfire_kd.distill.loss import PseudoTargetKDLoss, pseudo_targets, teacher_forward

    img, parts = batch["img"], {}

    def timed(name, fn):
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        parts.setdefault(name, []).append(time.perf_counter() - t0)
        return result

    for i in range(repeats + 3):
        preds = timed("student_forward", lambda: student(img))
        decoded, raw = timed("teacher_forward", lambda: teacher_forward(crit.teacher, img))
        if isinstance(crit, PseudoTargetKDLoss):  # its two extra stages, timed on their own
            targets = timed(
                "nms_pseudo_targets", lambda d=decoded, r=raw: pseudo_targets(d, r["scores"], crit.settings)
            )
            if targets.count == 0:  # training skips matching and the KD terms then: nothing to time
                return {"skipped": f"the teacher keeps no detection at conf {crit.settings.teacher_conf}"}
            timed("matching", lambda p=preds, t=targets: crit.match(*crit.student_outputs(p), t))

        def loss_fn(p=preds, d=decoded, r=raw):  # ground truth and KD terms, summed as the criterion sums them
            det, _ = crit.detection.loss(p, batch)
            terms = crit.terms(p, d, r)
            return det.sum() + (torch.stack([terms[k] for k in crit.TERMS]) * crit.term_weights(det.device)).sum()

        total = timed("losses", loss_fn)
        timed("backward", total.backward)
        student.zero_grad(set_to_none=True)
        if i < 3:  # warm-up
            parts.clear()
    medians = {k: statistics.median(v) for k, v in parts.items()}
    return {"median_s": medians, "total_s": sum(medians.values())}


def _parse_variant(text: str) -> tuple[str, list[str]]:
    """'NAME:key=value,key=value' -> (NAME, ['--set', 'key=value', ...])."""
    name, _, sets = text.partition(":")
    if not name or not sets:
        raise SystemExit(f"--variant {text!r}: expected NAME:key=value[,key=value], e.g. c2:distill.topk=5")
    return name, [a for kv in sets.split(",") for a in ("--set", kv)]


def _aggregate(per_seed: list[dict]) -> dict:
    """Mean over seeds of every figure, plus the spread (sample std) of the accuracy figures."""
    out = {}
    for key in per_seed[0]:
        values = [r[key] for r in per_seed if r[key] is not None]
        out[key] = statistics.fmean(values) if values else None
    for key in ("map50", "map50_95", "teacher_agreement"):
        values = [r[key] for r in per_seed]
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["seeds"] = len(per_seed)
    return out


def _fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def _table(results: dict[str, dict], spread: bool) -> list[str]:
    """The Markdown table of the variants; accuracy as mean ± std when there are several seeds."""
    base = results.get("a_none")
    lines = [
        "| variant | mAP50 | mAP50-95 | Δ mAP50-95 vs (a) | retention mAP50 | retention mAP50-95 | teacher agreement "
        "| s/epoch | median step s | step cost vs (a) | peak RSS MiB | peak GPU MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def acc(r: dict, key: str) -> str:
        return f"{r[key]:.3f} ± {r[key + '_std']:.3f}" if spread else f"{r[key]:.3f}"

    for name, r in results.items():
        delta = None if base is None else r["map50_95"] - base["map50_95"]
        lines.append(
            f"| {name} | {acc(r, 'map50')} | {acc(r, 'map50_95')} | {_fmt(delta, '+.3f')} | "
            f"{_fmt(r['retention_map50'])} | {_fmt(r['retention_map50_95'])} | {acc(r, 'teacher_agreement')} | "
            f"{r['seconds_per_epoch']:.2f} | {r['median_step_s']:.3f} | {_fmt(r['step_cost_vs_a'], '.2f', 'x')} | "
            f"{r['peak_rss_mb']:.0f} | {_fmt(r['peak_gpu_mb'], '.0f')} |"
        )
    return lines


def _profile_table(methods: dict[str, dict]) -> list[str]:
    """One column per method; a method whose profile was skipped says why below the table."""
    timed = {m: r for m, r in methods.items() if "median_s" in r}
    parts = list(dict.fromkeys(p for r in timed.values() for p in r["median_s"]))
    lines = ["", "| part | " + " | ".join(timed) + " |", "|---|" + "---:|" * len(timed)]
    for part in parts:
        cells = [_fmt(r["median_s"].get(part), ".4f") for r in timed.values()]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"{r['total_s']:.4f}" for r in timed.values()) + " |")
    lines += [f"\n{m}: profile skipped, {r['skipped']}." for m, r in methods.items() if "skipped" in r]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="data.yaml (default: the synthetic demo dataset)")
    parser.add_argument("--teacher", default=None, help="teacher .pt (default: train a yolov8s teacher first)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--teacher-epochs", type=int, default=25)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--optimizer", default="AdamW")
    parser.add_argument("--lr0", type=float, default=0.002)
    parser.add_argument(
        "--nbs", type=int, default=None, help="nominal batch: one optimizer step per nbs images (default: --batch)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train every variant once per seed")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:key=value[,key=value]",
        help="an extra variant: overrides on top of the config's defaults, e.g. d_l1:distill.lambda_distillation=1",
    )
    parser.add_argument("--only", default=None, help="comma-separated variants to run (default: all)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trainings at once (CPU: ultralytics gives each one core less than the machine has; "
        "timings are only comparable within one --jobs setting)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the per-part profile of one KD step")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = dict(VARIANTS)
    variants.update(_parse_variant(v) for v in args.variant)
    if args.only:
        only = set(args.only.split(","))
        if only - set(variants):
            raise SystemExit(f"--only: unknown variant(s) {sorted(only - set(variants))}; known: {sorted(variants)}")
        variants = {k: v for k, v in variants.items() if k in only}

    data = args.data
    if data is None:
        from wildfire_kd.synth import synthesize

        data = str(synthesize(args.out / "data", train_images=48, val_images=16, imgsz=320))  # its data since issue 8
    teacher = args.teacher
    if teacher is None:
        cmd = _train_args(args, data, "teacher", args.seeds[0])
        cmd += ["--student", "yolov8s.yaml", "--epochs", str(args.teacher_epochs), "--set", "distill.response=false"]
        _run(cmd)
        teacher = str(args.out / "teacher" / "weights" / "best.pt")

    jobs = [(name, seed) for seed in args.seeds for name in variants]

    def train_one(job: tuple[str, int]) -> tuple[str, dict]:
        name, seed = job
        run_name = name if len(args.seeds) == 1 else f"{name}-s{seed}"
        print(f"training {run_name} ...", flush=True)
        _, peak = _run(_train_args(args, data, run_name, seed) + ["--teacher", teacher, *variants[name]])
        return name, _variant_figures(args.out / run_name, peak)

    per_seed: dict[str, list[dict]] = {name: [] for name in variants}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for name, figures in pool.map(train_one, jobs):
            per_seed[name].append(figures)
    results = {name: _aggregate(runs) for name, runs in per_seed.items()}
    base = results.get("a_none")
    for r in results.values():
        r["epoch_cost_vs_a"] = r["seconds_per_epoch"] / base["seconds_per_epoch"] if base else None
        r["step_cost_vs_a"] = r["median_step_s"] / base["median_step_s"] if base else None
    profile = None if args.no_profile else profile_step(data, teacher, args.imgsz, args.batch, args.device)
    report = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "data": data,
        "teacher": teacher,
        "variants": results,
        "per_seed": per_seed,
        "kd_step_profile": profile,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2))

    seeds = " ".join(map(str, args.seeds))
    spread = len(args.seeds) > 1
    lines = [
        f"Data `{data}`, teacher `{teacher}`, {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, "
        f"nbs {args.nbs or args.batch}, "
        f"{args.optimizer} lr0 {args.lr0}, seed(s) {seeds}, device {args.device}, {args.jobs} training(s) at once."
        + (" Accuracy: mean ± sample std over the seeds; times and memory: mean." if spread else ""),
        "",
    ]
    lines += _table(results, spread)
    t = next(iter(results.values()))
    lines += ["", f"Teacher: mAP50 {t['teacher_map50']:.3f}, mAP50-95 {t['teacher_map50_95']:.3f}."]
    if profile:
        where = f"{profile['device']}, batch {profile['batch']}, imgsz {profile['imgsz']}"
        lines += ["", f"One response-KD step ({where}), median seconds per part:"]
        lines += _profile_table(profile["methods"])
    print(write_markdown(args.out / "RESULTS.md", lines))


if __name__ == "__main__":
    main()
