"""MODEL_CARD.md of a build: what the model is, its data, student vs teacher, parity, intended use, limitations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config, DistillSettings
from .export import file_key
from .layout import VALIDATION_DIR, VALIDATION_JSON
from .pool import describe_taught
from .validate.result import ValidationResult, worst_retention


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


def _teacher_lines(result) -> list[str]:
    """How the teacher came to teach: finetuned first (before and after on the val split), and which of its classes
    answered for the dataset's. Nothing when it was used as given with the dataset's own classes."""
    stages = {s.name: s for s in result.stages}
    lines = []
    finetuned = stages.get("finetune")
    mapped = (finetuned.result if finetuned else stages["train"].result).get("teacher_classes")
    if mapped:
        pairs = ", ".join(
            f"{d} ← {mapped['teacher'][k]}" for d, k in zip(mapped["dataset"], mapped["teacher_index"], strict=True)
        )
        lines.append(
            f"The teacher knows {mapped['teacher']}; it answered for this dataset's classes by name ({pairs})."
        )
    if finetuned:
        before, after = finetuned.result["before"], finetuned.result["after"]
        lines.append(
            f"The teacher was finetuned on this dataset first ({finetuned.result['epochs_completed']} epochs): val "
            f"mAP50 {before['map50']:.3f} before, {after['map50']:.3f} after (mAP50-95 {before['map50_95']:.3f}, "
            f"{after['map50_95']:.3f})."
        )
    return [" ".join(lines), ""] if lines else []


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


def _data(config: Config, info, unlabeled: dict[str, Any] | None) -> list[str]:
    splits = "; ".join(
        f"{k} {s.images} images ({s.background_images} background), instances "
        f"{dict(zip(info.names, s.instances, strict=True))}"
        for k, s in info.splits.items()
    )
    pool = [describe_taught(unlabeled), ""] if unlabeled else []
    return ["## Data", "", f"`{config.train.data}`: classes {info.names}; {splits}", "", *pool]


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


def _camera_path_rows(val: ValidationResult) -> list[str]:
    """Camera sequences (fires found, minutes to the alarm, false alarms per camera-day) and robustness."""
    rows = []
    if val.sequences:
        t, s = val.sequences["teacher"], val.sequences["student"]
        rule, profile = val.sequences["rule_text"], val.sequences.get("profile_text", "the model's size")
        rows += [
            f"| fire sequences found ({s['positives']}; {profile}, alarm {rule}) | {_fmt(t['recall'])} | "
            f"{_fmt(s['recall'])} | – |",
            f"| alerts per fire found (one event per fire: 1) | {_fmt(t.get('alerts_per_fire'), 2)} | "
            f"{_fmt(s.get('alerts_per_fire'), 2)} | – |",
            f"| median minutes from smoke onset to the alarm | {_fmt(t['median_minutes_to_detection'], 1)} | "
            f"{_fmt(s['median_minutes_to_detection'], 1)} | – |",
            f"| false alarms per camera-day ({s['negatives']} smoke-free sequences) | "
            f"{_fmt(t['false_alarms_per_camera_day'], 2)} | {_fmt(s['false_alarms_per_camera_day'], 2)} | – |",
        ]
    if val.robustness:
        worst = {role: worst_retention(val.robustness, role) for role in ("teacher", "student")}
        rows.append(
            f"| worst recall retention (JPEG q30-90, rescaling, brightness, contrast) | {_fmt(worst['teacher'])} | "
            f"{_fmt(worst['student'])} | – |"
        )
    return rows


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
        *_camera_path_rows(val),
        f"| parameters | {t.parameters:,} | {s.parameters:,} | – |",
        f"| latency ms, batch 1, {device} | {_fmt(t.latency_ms, 2)} | {_fmt(s.latency_ms, 2)} | – |",
        "",
        f"Gates: {gates or 'none configured'}",
        "",
    ]


def _onnx_files(exported: list[dict[str, Any]], parity: dict[str, Any]) -> list[str]:
    lines = [
        "## Model files and parity with PyTorch",
        "",
        "| file | size MB | sha256 | parity | max box Δ px | max score Δ | detections matched | mAP50 |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for f in exported:
        r = parity[file_key(f)]
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
        *_teacher_lines(result),
        *_data(config, info, val.unlabeled),
        *_student_vs_teacher(val),
        *_onnx_files(result.stage("export").result["files"], result.stage("parity").result),
        *_USE_AND_LIMITS,
    ]
    return "\n".join(lines) + "\n"
