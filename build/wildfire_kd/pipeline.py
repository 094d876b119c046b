"""The `build` command: train -> validate -> export -> parity into one folder, with a report a release can trust.

Each stage has a fingerprint: the sha256 of its part of the config and of its inputs. Re-running `build` on
the same folder skips a stage whose fingerprint and recorded outputs are unchanged, resumes a training run
that was interrupted, and redoes everything downstream of a change. A failed gate does not stop the later
stages (their figures help to understand the failure) but fails the build, naming the stage and the gate.

    OUT/train/            ultralytics run: weights/best.pt, results.csv, batch_log.jsonl, train.json
    OUT/validation/       validation.json, validation.md, validation.png
    OUT/export/           student.onnx (+ _fp16, _int8), export.json, parity*.json
    OUT/build_report.json every stage's result, gates, durations, versions, config hash, all sha256
    OUT/MODEL_CARD.md     what the model is and how well it does, for the camera teams
    OUT/SHA256SUMS        `sha256sum -c SHA256SUMS` verifies every shipped file
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, save_config
from .data import preflight, split_images
from .errors import GateFailure, InputError, StageFailure, WildfireKDError
from .reports import atomic_write_text, package_versions, write_json
from .weights import sha256_file

REPORT_NAME = "build_report.json"
CARD_NAME = "MODEL_CARD.md"
SUMS_NAME = "SHA256SUMS"
STAGES = ("train", "validate", "export", "parity")


@dataclass
class StageRecord:
    name: str
    status: str  # "ran", "skipped" (unchanged), "resumed", "failed"
    passed: bool
    seconds: float
    fingerprint: str
    outputs: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    result: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class BuildResult:
    out_dir: str
    passed: bool
    stages: list[StageRecord]

    @property
    def failures(self) -> list[str]:
        return [f"{s.name}: {f}" for s in self.stages for f in s.failures]

    def stage(self, name: str) -> StageRecord:
        return next(s for s in self.stages if s.name == name)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def dataset_fingerprint(data_yaml: str) -> str:
    """data.yaml's bytes plus every image and label file's name, size and mtime (cheap; no image decoding)."""
    from .data import label_path

    entries = []
    for split in ("train", "val"):
        for image in split_images(data_yaml, split):
            label = label_path(image)
            stat = image.stat()
            lstat = label.stat() if label.is_file() else None
            entries.append((str(image), stat.st_size, stat.st_mtime_ns, lstat and (lstat.st_size, lstat.st_mtime_ns)))
    return _digest(sha256_file(data_yaml), entries)


class _Builder:
    def __init__(self, config: Config, out: Path, previous: dict[str, Any] | None):
        self.config, self.out = config, out
        self.previous = {s["name"]: s for s in (previous or {}).get("stages", [])}
        self.records: list[StageRecord] = []

    def _outputs(self, paths: list[Path]) -> dict[str, str]:
        return {str(p.relative_to(self.out)): sha256_file(p) for p in paths if p.is_file()}

    def _unchanged(self, name: str, fingerprint: str) -> dict[str, Any] | None:
        """The previous record of this stage when its inputs are the same and its outputs are intact."""
        prev = self.previous.get(name)
        if not prev or prev["fingerprint"] != fingerprint or prev["status"] == "failed" and not prev["result"]:
            return None
        for rel, digest in prev["outputs"].items():
            path = self.out / rel
            if not path.is_file() or sha256_file(path) != digest:
                return None
        return prev

    def stage(self, name: str, fingerprint: str, run, upstream_changed: bool) -> StageRecord:
        prev = None if upstream_changed else self._unchanged(name, fingerprint)
        if prev is not None:
            record = StageRecord(**{**prev, "status": "skipped", "seconds": 0.0})
        else:
            start = time.time()
            try:
                status, passed, outputs, result, failures = run()
            except (GateFailure, StageFailure) as e:  # divergence, or a stage's own tool broke: stop here
                self.records.append(StageRecord(name, "failed", False, round(time.time() - start, 2), fingerprint,
                                                failures=[str(e)]))  # fmt: skip
                raise _Stopped(name, str(e), type(e)) from e
            record = StageRecord(name, status, passed, round(time.time() - start, 2), fingerprint,
                                 self._outputs(outputs), result, failures)  # fmt: skip
        self.records.append(record)
        return record


class _Stopped(Exception):
    """A stage that later stages cannot run after; ``error`` is the class (so the exit code) the build ends with."""

    def __init__(self, stage: str, reason: str, error: type[WildfireKDError]):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.error = stage, error


def _train_stage(config: Config, out: Path):
    from .distill import REPORT_NAME as TRAIN_REPORT
    from .distill import train

    run = out / "train"
    stage_config = config.model_copy(deep=True)
    t = stage_config.train
    t.out, t.name, t.exist_ok = str(out), "train", True
    stage_config.validation.after_train = False  # the build validates in its own stage

    def run_stage():
        status = "ran"
        last = run / "weights" / "last.pt"
        if last.is_file() and not (run / TRAIN_REPORT).is_file():
            result, status = train(stage_config, resume=str(run)), "resumed"
        else:
            if run.exists():
                shutil.rmtree(run)  # inputs changed: start clean, never mix two runs' epochs
            result = train(stage_config)
        if not result.best:
            return "failed", False, [], result.to_dict(), ["training wrote no best.pt"]
        files = [Path(result.best), Path(result.results_csv), Path(result.batch_log), run / TRAIN_REPORT]
        return status, True, files, result.to_dict(), []

    return run_stage


def build(config: Config, out: str | Path) -> BuildResult:
    """Run every stage into ``out``; write build_report.json, MODEL_CARD.md and SHA256SUMS."""
    t = config.train
    if not t.data or not t.teacher:
        raise InputError("build needs a dataset and a teacher: pass --data and --teacher (or set train.data/teacher)")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    previous_report = out / REPORT_NAME
    previous = json.loads(previous_report.read_text(encoding="utf-8")) if previous_report.is_file() else None
    builder = _Builder(config, out, previous)
    info = preflight(t.data, max_bad_fraction=t.max_bad_fraction)
    data_fp = dataset_fingerprint(t.data)
    teacher_sha = sha256_file(t.teacher)
    student_input = sha256_file(t.student) if Path(t.student).is_file() else t.student
    started = time.time()
    try:
        result = _run_stages(config, out, builder, data_fp, teacher_sha, student_input)
    except _Stopped as stop:
        result = BuildResult(str(out), False, builder.records)
        write_json(out / REPORT_NAME, {"passed": False, "failures": result.failures, "stopped_at": stop.stage,
                                       "stages": [asdict(s) for s in result.stages],
                                       "config_sha256": config.digest(), "versions": package_versions()})  # fmt: skip
        raise stop.error(f"build stopped at stage {stop}") from None
    _write_outputs(config, out, result, info, teacher_sha, data_fp, round(time.time() - started, 2))
    _track_build(config, out, result)
    return result


def _track_build(config: Config, out: Path, result: BuildResult) -> None:
    """The build's figures and files into the training run's trackers (train.loggers), the same MLflow run."""
    if not config.train.loggers:
        return
    from .distill import _summary_of, track_summary

    stage_config = config.model_copy(deep=True)
    stage_config.train.out = str(out)  # as the train stage ran it: OUT/train, OUT/mlflow.db
    files = [Path(f["path"]) for f in result.stage("export").result["files"]]
    files += [out / rel for rel in (REPORT_NAME, CARD_NAME, "SHA256SUMS", "validation/validation.json",
                                    "validation/validation.md", "export/export.json")]  # fmt: skip
    figures = {"validation": _summary_of(out / "validation"),
               "build": {"passed": result.passed, "failures": "; ".join(result.failures) or "none"}}  # fmt: skip
    track_summary(stage_config, out / "train", figures, files)


def _run_stages(config: Config, out: Path, builder: _Builder, data_fp: str, teacher_sha: str,
                student_input: str) -> BuildResult:  # fmt: skip
    t = config.train

    # train
    train_fp = _digest("train", config.train.model_dump(exclude={"device", "workers", "out", "name", "exist_ok"}),
                       config.distill.model_dump(), data_fp, teacher_sha, student_input)  # fmt: skip
    train_rec = builder.stage("train", train_fp, _train_stage(config, out), upstream_changed=False)
    if not train_rec.passed:  # no student: nothing after this can run
        raise _Stopped("train", "; ".join(train_rec.failures), StageFailure)
    changed = train_rec.status != "skipped"
    best = Path(train_rec.result["best"])
    best_sha = sha256_file(best)

    # validate
    from .validate import JSON_NAME, MD_NAME, PNG_NAME, validate

    v = config.validation
    vdir = out / "validation"
    imgsz = v.imgsz or t.imgsz
    device = t.device if v.device is None else v.device

    def run_validate():
        report = validate(str(best), t.teacher, t.data, v, vdir, imgsz=imgsz, device=device,
                          teacher_sha256=t.teacher_sha256, max_bad_fraction=t.max_bad_fraction,
                          allow_unsafe_weights=t.allow_unsafe_weights)  # fmt: skip
        failures = [f"gate {g.describe()}" for g in report.failed_gates]
        return ("ran", report.passed, [vdir / JSON_NAME, vdir / MD_NAME, vdir / PNG_NAME],
                {"passed": report.passed, "retention": report.retention,
                 "teacher_agreement": report.teacher_agreement}, failures)  # fmt: skip

    val_fp = _digest("validate", v.model_dump(), best_sha, teacher_sha, data_fp, imgsz, device)
    val_rec = builder.stage("validate", val_fp, run_validate, upstream_changed=changed)
    changed = changed or val_rec.status != "skipped"

    # export (the metadata carries the validation figures, so a new validation means a new export)
    from .export import FILE_NAMES, export
    from .export import REPORT_NAME as EXPORT_REPORT

    e = config.export
    edir = out / "export"

    def run_export():
        result = export(best, edir, e, imgsz=e.imgsz or t.imgsz, data=t.data, validation_report=vdir / JSON_NAME)
        files = [Path(f.path) for f in result.files] + [edir / EXPORT_REPORT]
        return "ran", True, files, {"files": [asdict(f) for f in result.files]}, []

    exp_fp = _digest("export", e.model_dump(), best_sha, data_fp if e.int8 else None, t.imgsz)
    exp_rec = builder.stage("export", exp_fp, run_export, upstream_changed=changed)
    changed = changed or exp_rec.status != "skipped"

    # parity, for every variant
    from .parity import parity

    p = config.parity

    def run_parity():
        files, results, failures = [], {}, []
        for f in exp_rec.result["files"]:
            r = parity(best, f["path"], p, data=t.data, out=edir, fp32_onnx=str(edir / FILE_NAMES["fp32"]))
            results[f["variant"]] = {
                "passed": r.passed, "problems": r.problems, "map50": r.map50,
                "tensors": [asdict(d) for d in r.tensors], "detections": asdict(r.detections),
            }  # fmt: skip
            files.append(Path(r.report))
            failures += [f"{f['variant']}: {problem}" for problem in r.problems]
        return "ran", not failures, files, results, failures

    onnx_shas = [f["sha256"] for f in exp_rec.result["files"]]
    par_fp = _digest("parity", p.model_dump(), best_sha, onnx_shas, data_fp)
    builder.stage("parity", par_fp, run_parity, upstream_changed=changed)
    return BuildResult(str(out), all(r.passed for r in builder.records), builder.records)


def _write_outputs(config: Config, out: Path, result: BuildResult, info, teacher_sha: str, data_fp: str,
                   seconds: float) -> None:  # fmt: skip
    t = config.train
    save_config(config, out / "build_config.yaml")
    atomic_write_text(out / CARD_NAME, model_card(config, result, info))
    shipped = sorted({rel for s in result.stages for rel in s.outputs} | {CARD_NAME, "build_config.yaml"})
    outputs = {rel: sha256_file(out / rel) for rel in shipped}
    report = {
        "passed": result.passed,
        "failures": result.failures,
        "seconds": seconds,
        "stages": [asdict(s) for s in result.stages],
        "config_sha256": config.digest(),
        "config": config.model_dump(mode="json"),
        "inputs": {
            "data": {"yaml": str(Path(t.data).resolve()), "sha256": sha256_file(t.data), "fingerprint": data_fp},
            "teacher": {"path": str(Path(t.teacher).resolve()), "sha256": teacher_sha},
            "student": {"path": t.student, "sha256": sha256_file(t.student) if Path(t.student).is_file() else None},
        },
        "outputs": outputs,
        "versions": package_versions(),
    }
    write_json(out / REPORT_NAME, report)
    outputs[REPORT_NAME] = sha256_file(out / REPORT_NAME)
    atomic_write_text(out / SUMS_NAME, "".join(f"{digest}  {rel}\n" for rel, digest in sorted(outputs.items())))


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _card_field_rows(field: dict[str, Any] | None) -> list[str]:
    """The camera figures (false alarms, recall of small objects) as rows of the card's student-vs-teacher table."""
    if not field:
        return []
    t, s = field["teacher"], field["student"]
    return [
        f"| false alarms / 1000 smoke-free frames (conf {field['conf']:g}) | {_fmt(t['false_alarms_per_1000'])} | "
        f"{_fmt(s['false_alarms_per_1000'])} | – |",
        f"| recall, small objects (conf {field['conf']:g}) | {_fmt(t['recall_by_size']['small']['recall'])} | "
        f"{_fmt(s['recall_by_size']['small']['recall'])} | {_fmt(field['recall_retention']['small'])} |",
    ]


def distillation_summary(d) -> str:
    """One line on how the student was distilled, for the model card."""
    lam = f"λ_detection {d.lambda_detection}, λ_distillation {d.lambda_distillation}"
    if not d.response:
        text = "no response distillation"
    elif d.method == "dense":
        text = (
            f"dense response distillation at every anchor: class scores (QFL, β {d.cls_beta}, weight "
            f"{d.lambda_dist_kl}) and DFL-bin localization KD (T_ld {d.ld_temperature}, weight "
            f"{d.lambda_dist_ld}), box term weight {d.box_weight}, {lam}, α {d.schedule}"
        )
    else:
        text = (
            f"pseudo-target response distillation: CIoU box term (weight {d.box_weight}) and per-class Bernoulli "
            f"KL at T = {d.temperature} (weight {d.lambda_dist_kl}, target {d.cls_target}), {lam}, α {d.schedule}"
        )
    return text + (", plus ultralytics feature distillation" if d.feature_distillation else "")


def model_card(config: Config, result: BuildResult, info) -> str:
    """MODEL_CARD.md: what the model is, its data, student vs teacher, parity, intended use, limitations."""
    from . import __version__

    t, d = config.train, config.distill
    val = json.loads((Path(result.out_dir) / "validation" / "validation.json").read_text(encoding="utf-8"))
    exp = result.stage("export").result["files"]
    par = result.stage("parity").result
    train = result.stage("train").result
    splits = info.splits
    point = val.get("operating_point") if (val.get("operating_point") or {}).get("conf") is not None else None
    lines = [
        "# Model card: wildfire-kd student",
        "",
        f"**Build {'PASSED' if result.passed else 'FAILED'}**"
        + ("" if result.passed else ": " + "; ".join(result.failures)),
        "",
        "## What it is",
        "",
        f"A YOLOv8n object detector for **{', '.join(info.names)}** on field-camera images, distilled by "
        f"wildfire-kd {__version__} from the teacher `{Path(t.teacher).name}` ({distillation_summary(d)}). Trained "
        f"{train['epochs_completed']} epochs at {t.imgsz} px from `{t.student}`.",
        "",
        "Input: one RGB image letterboxed to the file's `wildfire_kd.imgsz` (aspect kept, padded with 114 grey), "
        "scaled to 0..1, NCHW float32. Output `output0`: 1 × (4 + classes) × anchors; rows 0-3 are box centre "
        "x/y, width and height in pixels of the letterboxed input, the rest are per-class probabilities. No NMS "
        "in the graph: `wildfire-kd-edge` (numpy, onnxruntime, OpenCV) applies class-aware NMS (IoU 0.7) and "
        + (
            f"the operating point shipped in the file: confidence {point['conf']:g} ({point['rule'].replace('_', ' ')}"
            f" on the val split: student precision {point['student']['p']:.3f}, recall {point['student']['r']:.3f})."
            if point
            else "confidence 0.25 (this build shipped no operating point)."
        ),  # fmt: skip
        "",
        "## Data",
        "",
        f"`{t.data}`: classes {info.names}; "
        + "; ".join(
            f"{k} {s.images} images ({s.background_images} background), instances "
            f"{dict(zip(info.names, s.instances, strict=True))}"
            for k, s in splits.items()
        ),  # fmt: skip
        "",
        "## Student vs teacher",
        "",
        "| metric | teacher | student | student / teacher |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("precision", "P"), ("recall", "R"), ("map50", "mAP50"), ("map50_95", "mAP50-95")):
        lines.append(f"| {label} | {_fmt(val['teacher'][key])} | {_fmt(val['student'][key])} | "
                     f"{_fmt(val['retention'][key])} |")  # fmt: skip
    lines += [
        f"| teacher agreement | – | {_fmt(val['teacher_agreement'])} | – |",
        *_card_field_rows(val.get("field")),
        f"| parameters | {val['teacher']['parameters']:,} | {val['student']['parameters']:,} | – |",
        f"| latency ms, batch 1, {val['settings']['device']} | {_fmt(val['teacher']['latency_ms'], 2)} | "
        f"{_fmt(val['student']['latency_ms'], 2)} | – |",
        "",
        "Gates: "
        + (
            "; ".join(
                f"{'✓' if g['passed'] else '✗'} {g['name']} {g['comparison']} {g['threshold']}" for g in val["gates"]
            )
            or "none configured"
        ),  # fmt: skip
        "",
        "## ONNX files and parity with PyTorch",
        "",
        "| file | size MB | sha256 | parity | max box Δ px | max score Δ | detections matched | mAP50 |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for f in exp:
        r = par[f["variant"]]
        det = r["detections"]
        map50 = r["map50"].get(f["variant"]) if r["map50"] else None  # fp32 is judged by parity, not mAP
        lines.append(f"| `{Path(f['path']).name}` | {f['size_mb']:.2f} | `{f['sha256'][:16]}…` | "
                     f"{'✓' if r['passed'] else '✗'} | {r['tensors'][0]['max_abs']:.3g} | "
                     f"{r['tensors'][1]['max_abs']:.3g} | {det['matched']}/{det['torch_detections']} | "
                     f"{_fmt(map50)} |")  # fmt: skip
    lines += [
        "",
        "## Intended use",
        "",
        "Early warning of smoke and fire on fixed field cameras, as one signal that a person reviews. Run the ONNX "
        "file with onnxruntime; `wildfire_kd/letterbox.py` is the reference preprocessing (numpy and OpenCV only).",
        "",
        "## Limitations",
        "",
        "- Scores are only as good as the data above: other scenes (night, fog, dust, sun glare, clouds, industrial "
        "smoke) can raise false alarms or miss fires; measure on your own cameras before relying on it.",
        "- The student is smaller than its teacher; the retention figures above say what it lost on this split.",
        "- int8 and fp16 files are judged by the bounds in `build_report.json`, not by bit-exact parity.",
        "- Not a replacement for human monitoring or emergency services.",
    ]
    return "\n".join(lines) + "\n"
