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
from .layout import (
    BUILD_CONFIG,
    BUILD_REPORT,
    EXPORT_DIR,
    EXPORT_REPORT,
    LAST,
    MODEL_CARD,
    SHA256SUMS,
    TRAIN_DIR,
    TRAIN_REPORT,
    VALIDATION_DIR,
    VALIDATION_JSON,
    VALIDATION_MD,
    VALIDATION_PNG,
    weights_file,
)
from .reports import atomic_write_text, package_versions, write_json
from .weights import sha256_file

REPORT_NAME, CARD_NAME, SUMS_NAME = BUILD_REPORT, MODEL_CARD, SHA256SUMS
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
                self.records.append(
                    StageRecord(name, "failed", False, round(time.time() - start, 2), fingerprint, failures=[str(e)])
                )
                raise _Stopped(name, str(e), type(e)) from e
            record = StageRecord(
                name,
                status,
                passed,
                round(time.time() - start, 2),
                fingerprint,
                self._outputs(outputs),
                result,
                failures,
            )
        self.records.append(record)
        return record


class _Stopped(Exception):
    """A stage that later stages cannot run after; ``error`` is the class (so the exit code) the build ends with."""

    def __init__(self, stage: str, reason: str, error: type[WildfireKDError]):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.error = stage, error


def _train_stage(config: Config, out: Path, info):
    from .distill import train

    run = out / TRAIN_DIR
    stage_config = config.model_copy(deep=True)
    t = stage_config.train
    t.out, t.name, t.exist_ok = str(out), TRAIN_DIR, True
    stage_config.validation.after_train = False  # the build validates in its own stage

    def run_stage():
        status = "ran"
        if weights_file(run, LAST).is_file() and not (run / TRAIN_REPORT).is_file():
            result, status = train(stage_config, resume=str(run), info=info), "resumed"
        else:
            if run.exists():
                shutil.rmtree(run)  # inputs changed: start clean, never mix two runs' epochs
            result = train(stage_config, info=info)
        if not result.best:
            return "failed", False, [], result.to_dict(), ["training wrote no best.pt"]
        files = [Path(result.best), Path(result.results_csv), Path(result.batch_log), run / TRAIN_REPORT]
        return status, True, files, result.to_dict(), []

    return run_stage


def _validate_stage(config: Config, out: Path, best: Path, info):
    from .validate import validate_from_config

    vdir = out / VALIDATION_DIR

    def run_stage():
        report = validate_from_config(config, vdir, student=str(best), info=info)
        failures = [f"gate {g.describe()}" for g in report.failed_gates]
        files = [vdir / VALIDATION_JSON, vdir / VALIDATION_MD, vdir / VALIDATION_PNG]
        result = {"passed": report.passed, "retention": report.retention, "teacher_agreement": report.teacher_agreement}
        return "ran", report.passed, files, result, failures

    return run_stage


def _export_stage(config: Config, out: Path, best: Path):
    from .export import export

    t, edir = config.train, out / EXPORT_DIR

    def run_stage():
        validation = out / VALIDATION_DIR / VALIDATION_JSON
        result = export(
            best, edir, config.export, imgsz=config.export.imgsz or t.imgsz, data=t.data, validation_report=validation
        )
        files = [Path(f.path) for f in result.files] + [edir / EXPORT_REPORT]
        return "ran", True, files, {"files": [asdict(f) for f in result.files]}, []

    return run_stage


def _parity_stage(config: Config, out: Path, best: Path, exported: list[dict[str, Any]]):
    from .parity import parity

    edir = out / EXPORT_DIR

    def run_stage():
        files, results, failures = [], {}, []
        for f in exported:
            r = parity(best, f["path"], config.parity, data=config.train.data, out=edir)  # fp32 file: the sibling
            results[f["variant"]] = {
                "passed": r.passed,
                "problems": r.problems,
                "map50": r.map50,
                "tensors": [asdict(d) for d in r.tensors],
                "detections": asdict(r.detections),
            }
            files.append(Path(r.report))
            failures += [f"{f['variant']}: {problem}" for problem in r.problems]
        return "ran", not failures, files, results, failures

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
    info = preflight(t.data, max_bad_fraction=t.max_bad_fraction)  # once: the stages receive it
    student_input = sha256_file(t.student) if Path(t.student).is_file() else t.student
    inputs = {"data": dataset_fingerprint(t.data), "teacher": sha256_file(t.teacher), "student": student_input}
    started = time.time()
    try:
        result = _run_stages(config, out, builder, inputs, info)
    except _Stopped as stop:
        result = BuildResult(str(out), False, builder.records)
        write_json(
            out / REPORT_NAME,
            {
                "passed": False,
                "failures": result.failures,
                "stopped_at": stop.stage,
                "stages": [asdict(s) for s in result.stages],
                "config_sha256": config.digest(),
                "versions": package_versions(),
            },
        )
        raise stop.error(f"build stopped at stage {stop}") from None
    _write_outputs(config, out, result, info, inputs, round(time.time() - started, 2))
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
    files += [out / REPORT_NAME, out / CARD_NAME, out / SUMS_NAME, out / EXPORT_DIR / EXPORT_REPORT]
    files += [out / VALIDATION_DIR / name for name in (VALIDATION_JSON, VALIDATION_MD)]
    figures = {
        "validation": _summary_of(out / VALIDATION_DIR),
        "build": {"passed": result.passed, "failures": "; ".join(result.failures) or "none"},
    }
    track_summary(stage_config, out / TRAIN_DIR, figures, files)


def _run_stages(config: Config, out: Path, builder: _Builder, inputs: dict[str, str], info) -> BuildResult:
    """train -> validate -> export -> parity; a stage reruns when its fingerprint or anything upstream changed.
    The export's metadata carries the validation figures, so a new validation means a new export."""
    t, data_fp, teacher_sha = config.train, inputs["data"], inputs["teacher"]
    train_fp = _digest(
        "train",
        t.model_dump(exclude={"device", "workers", "out", "name", "exist_ok"}),
        config.distill.model_dump(),
        data_fp,
        teacher_sha,
        inputs["student"],
    )
    train_rec = builder.stage("train", train_fp, _train_stage(config, out, info), upstream_changed=False)
    if not train_rec.passed:  # no student: nothing after this can run
        raise _Stopped("train", "; ".join(train_rec.failures), StageFailure)
    changed = train_rec.status != "skipped"
    best = Path(train_rec.result["best"])
    best_sha = sha256_file(best)

    val_fp = _digest(
        "validate",
        config.validation.model_dump(),
        best_sha,
        teacher_sha,
        data_fp,
        config.validation_imgsz,
        config.validation_device,
    )
    val_rec = builder.stage("validate", val_fp, _validate_stage(config, out, best, info), upstream_changed=changed)
    changed = changed or val_rec.status != "skipped"

    e = config.export
    exp_fp = _digest("export", e.model_dump(), best_sha, data_fp if e.int8 else None, t.imgsz)
    exp_rec = builder.stage("export", exp_fp, _export_stage(config, out, best), upstream_changed=changed)
    changed = changed or exp_rec.status != "skipped"

    exported = exp_rec.result["files"]
    par_fp = _digest("parity", config.parity.model_dump(), best_sha, [f["sha256"] for f in exported], data_fp)
    builder.stage("parity", par_fp, _parity_stage(config, out, best, exported), upstream_changed=changed)
    return BuildResult(str(out), all(r.passed for r in builder.records), builder.records)


def _write_outputs(
    config: Config, out: Path, result: BuildResult, info, inputs: dict[str, str], seconds: float
) -> None:
    from .model_card import model_card

    t = config.train
    save_config(config, out / BUILD_CONFIG)
    atomic_write_text(out / CARD_NAME, model_card(config, result, info))
    shipped = sorted({rel for s in result.stages for rel in s.outputs} | {CARD_NAME, BUILD_CONFIG})
    outputs = {rel: sha256_file(out / rel) for rel in shipped}
    report = {
        "passed": result.passed,
        "failures": result.failures,
        "seconds": seconds,
        "stages": [asdict(s) for s in result.stages],
        "config_sha256": config.digest(),
        "config": config.model_dump(mode="json"),
        "inputs": {
            "data": {"yaml": str(Path(t.data).resolve()), "sha256": sha256_file(t.data), "fingerprint": inputs["data"]},
            "teacher": {"path": str(Path(t.teacher).resolve()), "sha256": inputs["teacher"]},
            "student": {"path": t.student, "sha256": sha256_file(t.student) if Path(t.student).is_file() else None},
        },
        "outputs": outputs,
        "versions": package_versions(),
    }
    write_json(out / REPORT_NAME, report)
    outputs[REPORT_NAME] = sha256_file(out / REPORT_NAME)
    atomic_write_text(out / SUMS_NAME, "".join(f"{digest}  {rel}\n" for rel, digest in sorted(outputs.items())))
