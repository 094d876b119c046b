"""The `validate` stage: the student measured against its teacher on the same split, with gates.

Both models go through ultralytics' own validator with identical settings. Beside accuracy it reports cost
(parameters, GFLOPs, file size, batch-1 latency), retention (student / teacher for every accuracy figure)
and teacher agreement: the student's mAP50 when the teacher's own confident predictions are the ground
truth, i.e. how faithfully the student mimics its teacher.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, ValidateSettings
from .data import DatasetInfo, check_class_names, mirror, preflight
from .errors import InputError
from .layout import VALIDATION_JSON, VALIDATION_MD, VALIDATION_PNG
from .reports import atomic_write_text, package_versions, write_json
from .runtime import prepare_ultralytics
from .weights import check_weights, load_checked, model_class_names, sha256_file, ultralytics_loading

ACCURACY = ("precision", "recall", "map50", "map50_95")
LABELS = {"precision": "P", "recall": "R", "map50": "mAP50", "map50_95": "mAP50-95"}
JSON_NAME, MD_NAME, PNG_NAME = VALIDATION_JSON, VALIDATION_MD, VALIDATION_PNG


@dataclass
class ModelFigures:
    weights: str
    sha256: str
    size_mb: float
    parameters: int
    gflops: float
    latency_ms: float  # median batch-1 forward, fused model
    latency_p90_ms: float
    precision: float
    recall: float
    map50: float
    map50_95: float
    per_class: dict[str, dict[str, float | int | None]] = field(default_factory=dict)


@dataclass
class Gate:
    name: str
    value: float | None
    threshold: float
    comparison: str  # ">=" or "<="
    passed: bool

    def describe(self) -> str:
        shown = "undefined" if self.value is None else f"{self.value:.4g}"
        return f"{self.name} = {shown}, required {self.comparison} {self.threshold:g}"


@dataclass
class ValidationResult:
    out_dir: str
    passed: bool
    classes: list[str]
    teacher: ModelFigures
    student: ModelFigures
    retention: dict[str, float | None]
    teacher_agreement: float | None  # None: the teacher predicts nothing at agreement_conf, so it is undefined
    gates: list[Gate]
    operating_point: dict[str, Any] | None = None  # the student's confidence threshold for the cameras
    field: dict[str, Any] | None = None  # false alarms and recall by size at that threshold (camera_metrics)

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(student: float | None, teacher: float | None) -> float | None:
    """student / teacher; None when either is undefined or the teacher scores 0."""
    return student / teacher if student is not None and teacher is not None and teacher > 0 else None


def _latency(model, imgsz: int, device, warmup: int, runs: int) -> tuple[float, float]:
    import torch

    x = torch.zeros(1, 3, imgsz, imgsz, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]


def _accuracy(weights: str, data: str, settings: ValidateSettings, imgsz: int, device: str, workdir: Path, name: str):
    """Run ultralytics' validator; returns its DetMetrics."""
    from ultralytics import YOLO

    return YOLO(weights).val(
        data=data,
        split=settings.split,
        imgsz=imgsz,
        batch=settings.batch,
        conf=settings.conf,
        iou=settings.iou,
        device=device or None,
        plots=False,
        verbose=False,
        project=str(workdir),
        name=name,
        exist_ok=True,
    )


def _figures(weights: str, model, metrics, names: list[str], settings: ValidateSettings, imgsz: int, device):
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    box = metrics.box
    per_class: dict[str, dict[str, float | int | None]] = {}
    scored = {int(c): i for i, c in enumerate(box.ap_class_index)}
    for c, name in enumerate(names):
        instances = int(metrics.nt_per_class[c]) if c < len(metrics.nt_per_class) else 0
        if c in scored:
            p, r, ap50, ap = (float(v) for v in box.class_result(scored[c]))
            per_class[name] = {"precision": p, "recall": r, "map50": ap50, "map50_95": ap, "instances": instances}
        else:  # no labels of this class in the split: nothing to score
            per_class[name] = {"precision": None, "recall": None, "map50": None, "map50_95": None, "instances": 0}
    parameters, gflops = int(get_num_params(model)), round(float(get_flops(model, imgsz)), 3)  # before fusing
    fused = model.fuse(verbose=False).to(device).eval()  # how it runs in deployment: Conv+BN folded
    latency, p90 = _latency(fused, imgsz, device, settings.latency_warmup, settings.latency_runs)
    return ModelFigures(
        weights=str(weights),
        sha256=sha256_file(weights),
        size_mb=round(Path(weights).stat().st_size / 2**20, 3),
        parameters=parameters,
        gflops=gflops,
        latency_ms=round(latency, 3),
        latency_p90_ms=round(p90, 3),
        precision=float(box.mp),
        recall=float(box.mr),
        map50=float(box.map50),
        map50_95=float(box.map),
        per_class=per_class,
    )


def _curves_at(box, i: int) -> dict[str, float]:
    """Mean-over-classes precision, recall and F1 of ultralytics' per-confidence curves at grid index ``i``."""
    return {k: round(float(getattr(box, f"{k}_curve").mean(0)[i]), 4) for k in ("p", "r", "f1")}


def operating_point(student_box, teacher_box, settings: ValidateSettings) -> dict[str, Any] | None:
    """The student's confidence threshold on this split, with both models' precision / recall there.

    Max F1 takes the index ultralytics itself reports its precision and recall at (smoothed mean F1); with
    ``target_precision``, the lowest confidence whose mean precision reaches it. None: no labelled class.
    """
    from ultralytics.utils.metrics import smooth

    if not len(student_box.f1_curve):
        return None
    if settings.target_precision is None:
        i, rule = int(smooth(student_box.f1_curve.mean(0), 0.1).argmax()), "max_f1"
        if student_box.f1_curve.mean(0)[i] <= 0:  # an all-zero F1 curve would ship confidence 0
            return {
                "conf": None,
                "rule": rule,
                "unreachable": "the student finds no labelled object at any confidence on this split",
            }
    else:
        reached = np.flatnonzero(student_box.p_curve.mean(0) >= settings.target_precision)
        if not len(reached):
            return {
                "conf": None,
                "rule": f"precision>={settings.target_precision}",
                "unreachable": "the student's precision never reaches the target on this split",
            }
        i, rule = int(reached[0]), f"precision>={settings.target_precision}"
    point = {"conf": round(float(student_box.px[i]), 4), "rule": rule, "student": _curves_at(student_box, i)}
    point["teacher"] = _curves_at(teacher_box, i) if len(teacher_box.f1_curve) else None
    return point


def _teacher_agreement(
    student: str, teacher_model, data: str, settings: ValidateSettings, imgsz: int, device: str, workdir: Path
) -> float | None:
    """Student mAP50 when the teacher's own predictions (conf >= agreement_conf) are the ground truth.

    Scored inside ultralytics' validator on the very tensors the student sees: each batch's labels are
    replaced by the teacher's NMS output on that batch, so letterboxing and padding cannot differ. None when
    the teacher predicts nothing at that confidence: with no ground truth the score is undefined, not 0.
    """
    import torch
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import xyxy2xywh

    class AgreementValidator(DetectionValidator):
        teacher_boxes = 0

        def preprocess(self, batch):
            batch = super().preprocess(batch)
            img = batch["img"]
            model = teacher_model.to(self.device)
            with torch.inference_mode():
                decoded = model(img.to(next(model.parameters()).dtype))[0]
            kept = non_max_suppression(
                decoded, conf_thres=settings.agreement_conf, iou_thres=settings.iou, max_det=self.args.max_det
            )
            self.teacher_boxes += sum(len(d) for d in kept)
            h, w = img.shape[2:]
            scale = torch.tensor([w, h, w, h], device=img.device, dtype=torch.float32)
            batch["batch_idx"] = torch.cat([torch.full((len(d),), i, device=img.device) for i, d in enumerate(kept)])
            batch["cls"] = torch.cat([d[:, 5:6] for d in kept])
            batch["bboxes"] = torch.cat([xyxy2xywh(d[:, :4]) / scale for d in kept])
            return batch

    args = {
        "data": data,
        "split": settings.split,
        "imgsz": imgsz,
        "batch": settings.batch,
        "conf": settings.conf,
        "iou": settings.iou,
        "device": device or None,
        "plots": False,
        "verbose": False,
        "rect": True,
        "project": str(workdir),
        "name": "agreement",
        "exist_ok": True,
        "mode": "val",
    }
    validator = AgreementValidator(args=args)
    validator(model=YOLO(student).model)
    return float(validator.metrics.box.map50) if validator.teacher_boxes else None


def _field(
    student: str,
    teacher: str,
    data: str,
    settings: ValidateSettings,
    imgsz: int,
    device: str,
    point: dict[str, Any] | None,
) -> dict[str, Any]:
    """Both models' false alarms and recall by size at the student's operating point (else agreement_conf)."""
    import cv2
    from ultralytics import YOLO

    from .camera_metrics import BUCKETS, field_figures
    from .data import label_path, split_images
    from .letterbox import IMAGE_SUFFIXES

    conf = point["conf"] if point and point.get("conf") is not None else settings.agreement_conf
    frames = [str(p) for p in split_images(data, settings.split)]
    truths: dict[str, list] = {}
    for frame in frames:
        label = label_path(Path(frame))
        text = label.read_text(encoding="utf-8") if label.is_file() else ""
        rows = [r.split() for r in text.splitlines() if r.strip()]
        truths[frame] = [(int(float(r[0])), *_xywh_to_xyxy([float(v) for v in r[1:5]])) for r in rows]
    negatives = {f for f, objects in truths.items() if not objects}
    unreadable = []
    if settings.negatives:
        folder = Path(settings.negatives)
        if not folder.is_dir():
            raise InputError(f"validation.negatives {folder}: not a folder of smoke-free frames")
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            if cv2.imread(str(path)) is None:  # reported, never silently dropped
                unreadable.append(str(path))
            else:
                frames.append(str(path))
                negatives.add(str(path))
    report: dict[str, Any] = {"conf": conf, "small_area": settings.small_area, "large_area": settings.large_area}
    for role, weights in (("student", student), ("teacher", teacher)):
        model, predictions = YOLO(weights), {}
        for frame in frames:
            r = model.predict(frame, imgsz=imgsz, conf=conf, iou=settings.iou, device=device or None, verbose=False)[0]
            predictions[frame] = [(int(c), *map(float, b)) for c, b in zip(r.boxes.cls, r.boxes.xyxyn, strict=True)]
        report[role] = field_figures(
            predictions, truths, negatives, conf, settings.small_area, settings.large_area, unreadable=unreadable
        ).to_dict()
    report["recall_retention"] = {
        b: _ratio(report["student"]["recall_by_size"][b]["recall"], report["teacher"]["recall_by_size"][b]["recall"])
        for b in BUCKETS
    }
    return report


def _xywh_to_xyxy(v: list[float]) -> tuple[float, float, float, float]:
    return v[0] - v[2] / 2, v[1] - v[3] / 2, v[0] + v[2] / 2, v[1] + v[3] / 2


def _gates(
    settings: ValidateSettings,
    student: ModelFigures,
    retention: dict,
    agreement: float | None,
    field: dict[str, Any] | None = None,
) -> list[Gate]:
    field = field or {}
    checks = [
        ("min_map50_retention", retention["map50"], settings.min_map50_retention, ">="),
        ("min_map50", student.map50, settings.min_map50, ">="),
        ("min_map50_95", student.map50_95, settings.min_map50_95, ">="),
        ("min_teacher_agreement", agreement, settings.min_teacher_agreement, ">="),
        ("max_latency_ms", student.latency_ms, settings.max_latency_ms, "<="),
        (
            "max_false_alarms_per_1000",
            (field.get("student") or {}).get("false_alarms_per_1000"),
            settings.max_false_alarms_per_1000,
            "<=",
        ),
        (
            "min_small_recall_retention",
            (field.get("recall_retention") or {}).get("small"),
            settings.min_small_recall_retention,
            ">=",
        ),
    ]
    gates = []
    for name, value, threshold, op in checks:
        if threshold is None:
            continue
        ok = value is not None and (value >= threshold if op == ">=" else value <= threshold)
        gates.append(Gate(f"validation.{name}", value, threshold, op, ok))
    return gates


def _fmt(v: float | int | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}f}"


def _markdown(result: ValidationResult, data: str, settings: ValidateSettings, imgsz: int) -> str:
    t, s = result.teacher, result.student
    lines = [
        "# Student vs teacher",
        "",
        f"Data `{data}`, split `{settings.split}`, imgsz {imgsz}, conf {settings.conf}, IoU {settings.iou}.",
        "",
        f"**{'PASSED' if result.passed else 'FAILED'}**",
        "",
        "| metric | teacher | student | student / teacher |",
        "|---|---:|---:|---:|",
    ]
    for key in ACCURACY:
        lines.append(
            f"| {LABELS[key]} | {_fmt(getattr(t, key))} | {_fmt(getattr(s, key))} | {_fmt(result.retention[key])} |"
        )
    agreement = _fmt(result.teacher_agreement) if result.teacher_agreement is not None else "undefined*"
    lines.append(f"| teacher agreement (student mAP50 vs teacher predictions) | – | {agreement} | – |")
    for key, label, digits in (
        ("parameters", "parameters", 0),
        ("gflops", "GFLOPs", 2),
        ("size_mb", "file MB", 2),
        ("latency_ms", "latency ms (median, batch 1)", 2),
    ):
        tv, sv = getattr(t, key), getattr(s, key)
        lines.append(f"| {label} | {_fmt(tv, digits)} | {_fmt(sv, digits)} | {_fmt(_ratio(sv, tv), 3)} |")
    lines += [
        "",
        "## Per class",
        "",
        "| class | instances | teacher mAP50 | student mAP50 | teacher mAP50-95 | student mAP50-95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in result.classes:
        tc, sc = t.per_class[name], s.per_class[name]
        lines.append(
            f"| {name} | {sc['instances']} | {_fmt(tc['map50'])} | {_fmt(sc['map50'])} | "
            f"{_fmt(tc['map50_95'])} | {_fmt(sc['map50_95'])} |"
        )
    if result.teacher_agreement is None:
        lines += [
            "",
            f"\\* the teacher predicts nothing at confidence ≥ {settings.agreement_conf} on this split, so "
            "there is nothing to agree with (validation.agreement_conf).",
        ]
    lines += _operating_point_markdown(result.operating_point)
    lines += _field_markdown(result.field)
    lines += ["", "## Gates", ""]
    lines += [f"- {'✓' if g.passed else '✗'} {g.describe()}" for g in result.gates] or ["- none configured"]
    return "\n".join(lines) + "\n"


def _operating_point_markdown(point: dict[str, Any] | None) -> list[str]:
    if not point:
        return []
    if point.get("conf") is None:
        return ["", f"## Operating point: none ({point['unreachable']}; rule {point['rule']})"]
    t_pr = point["teacher"] or {"p": None, "r": None}
    return [
        "",
        "## Operating point (shipped in the ONNX file; `wildfire-kd detect` uses it)",
        "",
        f"Confidence **{point['conf']:g}** ({point['rule'].replace('_', ' ')} on this split).",
        "",
        "| at this confidence | teacher | student |",
        "|---|---:|---:|",
        f"| precision | {_fmt(t_pr['p'])} | {_fmt(point['student']['p'])} |",
        f"| recall | {_fmt(t_pr['r'])} | {_fmt(point['student']['r'])} |",
    ]


def _field_markdown(field: dict[str, Any] | None) -> list[str]:
    if not field:
        return []
    t, s = field["teacher"], field["student"]
    lines = [
        "",
        f"## Camera figures at confidence {field['conf']:g}",
        "",
        "| | teacher | student | student / teacher |",
        "|---|---:|---:|---:|",
        f"| false alarms per 1000 smoke-free frames ({s['negative_frames']} frames) | "
        f"{_fmt(t['false_alarms_per_1000'], 1)} | {_fmt(s['false_alarms_per_1000'], 1)} | – |",
    ]
    for bucket in ("small", "medium", "large"):
        tb, sb = t["recall_by_size"][bucket], s["recall_by_size"][bucket]
        lines.append(
            f"| recall, {bucket} objects ({sb['objects']}) | {_fmt(tb['recall'])} | {_fmt(sb['recall'])} | "
            f"{_fmt(field['recall_retention'][bucket])} |"
        )
    lines.append("")
    lines.append(f"Small: under {field['small_area']:.2%} of the image area; large: {field['large_area']:.2%} or more.")
    if s["unreadable"]:
        lines.append(f"Unreadable smoke-free frames, not scored: {', '.join(s['unreadable'])}.")
    return lines


def _chart(result: ValidationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t, s = result.teacher, result.student
    fig, (left, right, sizes) = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    width = 0.38
    overall = [*ACCURACY, "agreement"]
    tv = [getattr(t, k) for k in ACCURACY] + [1.0]
    sv = [getattr(s, k) for k in ACCURACY] + [result.teacher_agreement or 0.0]  # undefined: an empty bar
    x = np.arange(len(overall))
    left.bar(x - width / 2, tv, width, label="teacher", color="#c0392b")
    left.bar(x + width / 2, sv, width, label="student", color="#2980b9")
    left.set_xticks(x, [LABELS.get(k, "teacher\nagreement") for k in overall])
    left.set_ylim(0, 1.05)
    left.set_title("overall")
    left.legend()
    x = np.arange(len(result.classes))
    right.bar(x - width / 2, [t.per_class[c]["map50"] or 0 for c in result.classes], width, color="#c0392b")
    right.bar(x + width / 2, [s.per_class[c]["map50"] or 0 for c in result.classes], width, color="#2980b9")
    right.set_xticks(x, result.classes)
    right.set_ylim(0, 1.05)
    right.set_title("mAP50 per class")
    field = result.field or {}
    if field:
        buckets = ["small", "medium", "large"]
        x = np.arange(len(buckets))
        for role, offset, color in (("teacher", -width / 2, "#c0392b"), ("student", width / 2, "#2980b9")):
            sizes.bar(
                x + offset, [field[role]["recall_by_size"][b]["recall"] or 0 for b in buckets], width, color=color
            )
        sizes.set_xticks(x, buckets)
        sizes.set_ylim(0, 1.05)
        fa = [_fmt(field[r]["false_alarms_per_1000"], 1) for r in ("teacher", "student")]
        sizes.set_title(f"recall by size at conf {field['conf']:g}\nfalse alarms / 1000 frames: {fa[0]} vs {fa[1]}")
    fig.suptitle(f"student vs teacher: {'passed' if result.passed else 'FAILED'}")
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def validate_from_config(config: Config, out: str | Path, student: str | None = None, info=None) -> ValidationResult:
    """`validate` with everything taken from ``config``: the student (``train.student`` unless given, a .pt), the
    teacher and the data must be set; ``info``: a preflight of the data already run (the build's), else one runs."""
    t = config.train
    student = student or t.student
    missing = [flag for flag, value in (("--teacher", t.teacher), ("--data", t.data)) if not value]
    missing += [] if student.endswith(".pt") else ["--student (a .pt file)"]
    if missing:
        raise InputError(f"validate needs {', '.join(missing)}")
    return validate(
        student,
        t.teacher,
        t.data,
        config.validation,
        out,
        imgsz=config.validation_imgsz,
        device=config.validation_device,
        student_sha256=t.student_sha256 if student == t.student else None,
        teacher_sha256=t.teacher_sha256,
        max_bad_fraction=t.max_bad_fraction,
        allow_unsafe_weights=t.allow_unsafe_weights,
        info=info,
    )


def validate(
    student: str,
    teacher: str,
    data: str,
    settings: ValidateSettings,
    out: str | Path,
    imgsz: int,
    device: str = "",
    student_sha256: str | None = None,
    teacher_sha256: str | None = None,
    max_bad_fraction: float = 0.0,
    allow_unsafe_weights: bool = False,
    info: DatasetInfo | None = None,
) -> ValidationResult:
    """Evaluate teacher and student on the same split; write validation.json/.md/.png into ``out``.

    ``info``: the preflight of ``data`` when the caller already ran it (it must cover ``settings.split``)."""
    prepare_ultralytics()
    if info is None or settings.split not in info.splits:
        info = preflight(data, splits=(settings.split,), max_bad_fraction=max_bad_fraction)
    full = check_weights(student, student_sha256, "student", allow_unsafe_weights)
    full |= check_weights(teacher, teacher_sha256, "teacher", allow_unsafe_weights)
    with ultralytics_loading(full):  # ultralytics' validator loads both files again
        return _validate(student, teacher, data, settings, Path(out), imgsz, device, info)


def _validate(
    student: str, teacher: str, data: str, settings: ValidateSettings, out: Path, imgsz: int, device: str, info
) -> ValidationResult:
    from ultralytics.utils.torch_utils import select_device

    student_model, teacher_model = load_checked(student, "student"), load_checked(teacher, "teacher")
    check_class_names(model_class_names(teacher_model), info.names, teacher, data)
    student_names = model_class_names(student_model)
    if student_names != info.names:
        raise InputError(
            f"class names differ: student {student} has {student_names}, dataset {data} has {info.names} "
            "(validate a student trained on this dataset)"
        )
    out.mkdir(parents=True, exist_ok=True)
    torch_device = select_device(device or "", verbose=False)
    with tempfile.TemporaryDirectory(prefix="wildfire-kd-validate-") as tmp:
        work = Path(tmp)
        original_data, data = data, str(mirror(data, work / "dataset"))  # ultralytics writes caches beside labels
        figures, boxes = {}, {}
        for role, weights, model in (("teacher", teacher, teacher_model), ("student", student, student_model)):
            metrics = _accuracy(weights, data, settings, imgsz, device, work, role)
            figures[role] = _figures(weights, model, metrics, info.names, settings, imgsz, torch_device)
            boxes[role] = metrics.box
        agreement = _teacher_agreement(student, teacher_model, data, settings, imgsz, device, work)
        point = operating_point(boxes["student"], boxes["teacher"], settings)
        field = _field(student, teacher, data, settings, imgsz, device, point)
    t, s = figures["teacher"], figures["student"]
    retention = {k: _ratio(getattr(s, k), getattr(t, k)) for k in ACCURACY}
    gates = _gates(settings, s, retention, agreement, field)
    result = ValidationResult(
        out_dir=str(out),
        passed=all(g.passed for g in gates),
        classes=info.names,
        teacher=t,
        student=s,
        retention=retention,
        teacher_agreement=agreement,
        gates=gates,
        operating_point=point,
        field=field,
    )
    report = {
        **result.to_dict(),
        "data": {
            "yaml": str(Path(original_data).resolve()),
            "sha256": sha256_file(original_data),
            "split": settings.split,
            "images": info.splits[settings.split].images,
        },
        "settings": {**settings.model_dump(), "imgsz": imgsz, "device": str(torch_device)},
        "versions": package_versions(),
    }
    if agreement is None:
        report["teacher_agreement_undefined"] = (
            f"the teacher predicts nothing at confidence >= {settings.agreement_conf} on this split"
        )
    write_json(out / JSON_NAME, report)
    atomic_write_text(out / MD_NAME, _markdown(result, original_data, settings, imgsz))
    _chart(result, out / PNG_NAME)
    return result
