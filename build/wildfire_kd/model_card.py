"""MODEL_CARD.md of a build: what the model is, its data, student vs teacher, parity, intended use, limitations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config, DistillSettings
from .layout import VALIDATION_DIR, VALIDATION_JSON
from .validate.result import ValidationResult


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def distillation_summary(d: DistillSettings) -> str:
    """One line on how the student was distilled."""
    lam = f"λ_detection {d.lambda_detection}, λ_distillation {d.lambda_distillation}"
    if not d.response:
        text = "no response distillation"
    elif d.method == "dense":
        text = (
            f"dense response distillation at every anchor: class scores (QFL, β {d.cls_beta}, weight "
            f"{d.cls_weight}) and DFL-bin localization KD (T_ld {d.ld_temperature}, weight "
            f"{d.lambda_dist_ld}), box term weight {d.box_weight}, {lam}, α {d.schedule}"
        )
    else:
        text = (
            f"pseudo-target response distillation: CIoU box term (weight {d.box_weight}) and per-class Bernoulli "
            f"KL at T = {d.temperature} (weight {d.cls_weight}, target {d.cls_target}), {lam}, α {d.schedule}"
        )
    return text + (", plus ultralytics feature distillation" if d.feature_distillation else "")


def _what_it_is(config: Config, info, epochs: int, point: dict[str, Any] | None) -> list[str]:
    t = config.train
    threshold = (
        f"the operating point shipped in the file: confidence {point['conf']:g} ({point['rule'].replace('_', ' ')} "
        f"on the val split: student precision {point['student']['p']:.3f}, recall {point['student']['r']:.3f})."
        if point
        else "confidence 0.25 (this build shipped no operating point)."
    )
    from . import __version__

    return [
        "## What it is",
        "",
        f"A YOLOv8n object detector for **{', '.join(info.names)}** on field-camera images, distilled by "
        f"wildfire-kd {__version__} from the teacher `{Path(t.teacher).name}` "
        f"({distillation_summary(config.distill)}). Trained {epochs} epochs at {t.imgsz} px from `{t.student}`.",
        "",
        "Input: one RGB image letterboxed to the file's `wildfire_kd.imgsz` (aspect kept, padded with 114 grey), "
        "scaled to 0..1, NCHW float32. Output `output0`: 1 × (4 + classes) × anchors; rows 0-3 are box centre "
        "x/y, width and height in pixels of the letterboxed input, the rest are per-class probabilities. No NMS "
        "in the graph: `wildfire-kd-edge` (numpy, onnxruntime, OpenCV) applies class-aware NMS (IoU 0.7) and "
        + threshold,
        "",
    ]


def _data(config: Config, info) -> list[str]:
    splits = "; ".join(
        f"{k} {s.images} images ({s.background_images} background), instances "
        f"{dict(zip(info.names, s.instances, strict=True))}"
        for k, s in info.splits.items()
    )
    return ["## Data", "", f"`{config.train.data}`: classes {info.names}; {splits}", ""]


def _camera_rows(camera: dict[str, Any] | None) -> list[str]:
    """The camera figures (false alarms, recall of small objects) as rows of the student-vs-teacher table."""
    if not camera:
        return []
    t, s = camera["teacher"], camera["student"]
    return [
        f"| false alarms / 1000 smoke-free frames (conf {camera['conf']:g}) | {_fmt(t['false_alarms_per_1000'])} | "
        f"{_fmt(s['false_alarms_per_1000'])} | – |",
        f"| recall, small objects (conf {camera['conf']:g}) | {_fmt(t['recall_by_size']['small']['recall'])} | "
        f"{_fmt(s['recall_by_size']['small']['recall'])} | {_fmt(camera['recall_retention']['small'])} |",
    ]


def _student_vs_teacher(val: ValidationResult) -> list[str]:
    lines = ["## Student vs teacher", "", "| metric | teacher | student | student / teacher |", "|---|---:|---:|---:|"]
    for key, label in (("precision", "P"), ("recall", "R"), ("map50", "mAP50"), ("map50_95", "mAP50-95")):
        teacher, student, retention = getattr(val.teacher, key), getattr(val.student, key), val.retention[key]
        lines.append(f"| {label} | {_fmt(teacher)} | {_fmt(student)} | {_fmt(retention)} |")
    gates = "; ".join(f"{'✓' if g.passed else '✗'} {g.name} {g.comparison} {g.threshold}" for g in val.gates)
    t, s, device = val.teacher, val.student, val.settings["device"]
    return lines + [
        f"| teacher agreement | – | {_fmt(val.teacher_agreement)} | – |",
        *_camera_rows(val.camera_figures),
        f"| parameters | {t.parameters:,} | {s.parameters:,} | – |",
        f"| latency ms, batch 1, {device} | {_fmt(t.latency_ms, 2)} | {_fmt(s.latency_ms, 2)} | – |",
        "",
        f"Gates: {gates or 'none configured'}",
        "",
    ]


def _onnx_files(exported: list[dict[str, Any]], parity: dict[str, Any]) -> list[str]:
    lines = [
        "## ONNX files and parity with PyTorch",
        "",
        "| file | size MB | sha256 | parity | max box Δ px | max score Δ | detections matched | mAP50 |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for f in exported:
        r = parity[f["variant"]]
        det, tensors = r["detections"], r["tensors"]
        map50 = r["map50"].get(f["variant"]) if r["map50"] else None  # fp32 is judged by parity, not mAP
        lines.append(
            f"| `{Path(f['path']).name}` | {f['size_mb']:.2f} | `{f['sha256'][:16]}…` | {'✓' if r['passed'] else '✗'} "
            f"| {tensors[0]['max_abs']:.3g} | {tensors[1]['max_abs']:.3g} | {det['matched']}/{det['torch_detections']} "
            f"| {_fmt(map50)} |"
        )
    return lines + [""]


_USE_AND_LIMITS = [
    "## Intended use",
    "",
    "Early warning of smoke and fire on fixed field cameras, as one signal that a person reviews. Run the ONNX "
    "file with onnxruntime; `wildfire_kd/edge/letterbox.py` is the reference preprocessing (numpy and OpenCV only).",
    "",
    "## Limitations",
    "",
    "- Scores are only as good as the data above: other scenes (night, fog, dust, sun glare, clouds, industrial "
    "smoke) can raise false alarms or miss fires; measure on your own cameras before relying on it.",
    "- The student is smaller than its teacher; the retention figures above say what it lost on this split.",
    "- int8 and fp16 files are judged by the bounds in `build_report.json`, not by bit-exact parity.",
    "- Not a replacement for human monitoring or emergency services.",
]


def model_card(config: Config, result, info) -> str:
    """MODEL_CARD.md for a finished build (``result``: pipeline.BuildResult; ``info``: the data's preflight)."""
    val = ValidationResult.load(Path(result.out_dir) / VALIDATION_DIR / VALIDATION_JSON)
    point = val.shipped_operating_point
    verdict = "**Build PASSED**" if result.passed else "**Build FAILED**: " + "; ".join(result.failures)
    lines = [
        "# Model card: wildfire-kd student",
        "",
        verdict,
        "",
        *_what_it_is(config, info, result.stage("train").result["epochs_completed"], point),
        *_data(config, info),
        *_student_vs_teacher(val),
        *_onnx_files(result.stage("export").result["files"], result.stage("parity").result),
        *_USE_AND_LIMITS,
    ]
    return "\n".join(lines) + "\n"
