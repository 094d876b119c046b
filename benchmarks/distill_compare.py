"""Distillation quality and cost: the student trained four ways with the same seed, budget and augmentation.

    .venv/bin/python benchmarks/distill_compare.py --out runs/bench                  # CPU scale, synthetic data
    .venv/bin/python benchmarks/distill_compare.py --data ../shared/datasets/fire8/data.yaml \\
        --teacher TEACHER.pt --imgsz 640 --epochs 50 --batch 32 --device 0 --out runs/bench-fire8   # a GPU

(a) no distillation, (b) ultralytics' feature distillation (distill_model), (c) our response distillation,
(d) (b) and (c) stacked. Each variant is one `wildfire-kd train` process (so peak memory is its own) ending with
the student-vs-teacher validation. Writes RESULTS.md and results.json into --out: mAP50, mAP50-95, retention,
teacher agreement, seconds per epoch, median optimizer-step time, peak memory, and each variant's cost as a
ratio to (a) from this same run; then a profile of one KD step split into its parts. Without --teacher, a
yolov8s teacher is trained from scratch on the data first (as `wildfire-kd demo` does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "a_none": ["--set", "distill.response=false"],
    "b_feature": ["--set", "distill.response=false", "--set", "distill.feature_distillation=true"],
    "c_response": [],
    "d_both": ["--set", "distill.feature_distillation=true"],
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


def _train_args(args, data: str, name: str) -> list[str]:
    return [
        sys.executable, "-m", "wildfire_kd.cli", "train", "--data", data, "--epochs", str(args.epochs),
        "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--device", args.device, "--out", str(args.out),
        "--name", name, "--set", "train.exist_ok=true", "--set", "train.plots=false",
        "--set", f"train.seed={args.seed}",
        "--set", f"train.optimizer={args.optimizer}", "--set", f"train.lr0={args.lr0}",
        "--set", "train.warmup_epochs=1", "--set", f"train.close_mosaic={max(1, args.epochs // 5)}",
        "--set", "train.patience=0", "--set", f"train.ultralytics={{nbs: {args.batch}}}",
        "--set", "validation.min_map50_retention=null",
    ]  # fmt: skip


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
    """Median seconds of each part of one response-KD step, on real images of the val split."""
    from wildfire_kd.runtime import prepare_ultralytics

    prepare_ultralytics()
    import cv2
    import numpy as np
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import select_device

    from wildfire_kd.config import DistillSettings
    from wildfire_kd.data import class_names, label_path, split_images
    from wildfire_kd.distill.loss import ResponseKDLoss, pseudo_targets, teacher_forward
    from wildfire_kd.letterbox import letterbox
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
    crit = ResponseKDLoss(student, teacher, DistillSettings())
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    parts: dict[str, list[float]] = {k: [] for k in ("student_forward", "teacher_forward", "nms_pseudo_targets",
                                                     "matching", "losses", "backward")}  # fmt: skip

    def timed(name, fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        parts[name].append(time.perf_counter() - t0)
        return out

    img = batch_dict["img"]
    for i in range(repeats + 3):
        preds = timed("student_forward", lambda: student(img))
        decoded, logits = timed("teacher_forward", lambda: teacher_forward(teacher, img))
        targets = timed("nms_pseudo_targets", lambda d=decoded, lg=logits: pseudo_targets(d, lg, crit.settings))
        outs = crit.student_outputs(preds)
        match = timed("matching", lambda o=outs, t=targets: crit.match(*o, t))

        def loss_fn(p=preds, o=outs, t=targets, m=match):
            det, _ = crit.detection.loss(p, batch_dict)
            kd_box, kd_cls = crit.losses(o[0], o[1], t, m)
            return det.sum() + 2.0 * (kd_box + 2.0 * kd_cls)

        total = timed("losses", loss_fn)
        timed("backward", total.backward)
        student.zero_grad(set_to_none=True)
        if i < 3:  # warm-up
            for v in parts.values():
                v.clear()
    medians = {k: statistics.median(v) for k, v in parts.items()}
    return {"device": str(dev), "batch": len(images), "imgsz": imgsz, "teacher_detections": targets.count,
            "median_s": medians, "total_s": sum(medians.values())}  # fmt: skip


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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    data = args.data
    if data is None:
        from wildfire_kd.data import synthesize

        data = str(synthesize(args.out / "data"))
    teacher = args.teacher
    if teacher is None:
        cmd = _train_args(args, data, "teacher") + ["--student", "yolov8s.yaml", "--epochs", str(args.teacher_epochs),
                                                    "--set", "distill.response=false"]  # fmt: skip
        _run(cmd)
        teacher = str(args.out / "teacher" / "weights" / "best.pt")

    results = {}
    for name, extra in VARIANTS.items():
        print(f"training {name} ...", flush=True)
        _, peak = _run(_train_args(args, data, name) + ["--teacher", teacher, *extra])
        results[name] = _variant_figures(args.out / name, peak)
    base = results["a_none"]
    for r in results.values():
        r["epoch_cost_vs_a"] = r["seconds_per_epoch"] / base["seconds_per_epoch"]
        r["step_cost_vs_a"] = r["median_step_s"] / base["median_step_s"]
    profile = profile_step(data, teacher, args.imgsz, args.batch, args.device)
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "data": data, "teacher": teacher,
              "variants": results, "kd_step_profile": profile}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(report, indent=2))

    lines = [
        f"Data `{data}`, teacher `{teacher}`, {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, "
        f"{args.optimizer} lr0 {args.lr0}, seed {args.seed}, device {args.device}.",
        "",
        "| variant | mAP50 | mAP50-95 | retention mAP50 | retention mAP50-95 | teacher agreement | s/epoch | "
        "median step s | step cost vs (a) | peak RSS MiB | peak GPU MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        gpu = "–" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f}"
        lines.append(
            f"| {name} | {r['map50']:.3f} | {r['map50_95']:.3f} | {r['retention_map50']:.3f} | "
            f"{r['retention_map50_95']:.3f} | {r['teacher_agreement']:.3f} | {r['seconds_per_epoch']:.2f} | "
            f"{r['median_step_s']:.3f} | {r['step_cost_vs_a']:.2f}x | {r['peak_rss_mb']:.0f} | {gpu} |"
        )
    t = results["a_none"]
    lines += ["", f"Teacher: mAP50 {t['teacher_map50']:.3f}, mAP50-95 {t['teacher_map50_95']:.3f}.", "",
              f"One response-KD step ({profile['device']}, batch {profile['batch']}, imgsz {profile['imgsz']}, "
              f"{profile['teacher_detections']} teacher detections), median seconds:", "",
              "| part | seconds | share |", "|---|---:|---:|"]  # fmt: skip
    for part, sec in profile["median_s"].items():
        lines.append(f"| {part} | {sec:.4f} | {sec / profile['total_s']:.0%} |")
    text = "\n".join(lines) + "\n"
    (args.out / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
