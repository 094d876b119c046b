"""The `build` command: train -> validate -> export -> parity into one folder, with a report a release can trust.

The inputs are verified once (the dataset's preflight, the teacher's pin and weights-only check) and handed to every
stage. Each stage is a class with its fingerprint next to its run: the sha256 of its part of the config and of
its inputs. Re-running `build` on the same folder skips a stage whose fingerprint and recorded outputs are
unchanged, resumes a training run that was interrupted, and redoes everything downstream of a change. A failed gate
does not stop the later stages (their figures help to understand the failure) but fails the build, naming the stage
and the gate.

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
from .data import DatasetInfo, dataset_folders, label_path, preflight
from .errors import GateFailure, InputError, StageFailure, WildfireKDError
from .export import file_key
from .guard import atomic_write_text, refuse_overwriting_inputs
from .layout import (
    BUILD_CONFIG,
    BUILD_REPORT,
    EXPORT_DIR,
    EXPORT_REPORT,
    FINETUNE_REPORT,
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
from .pool import PoolInfo, preflight_pool
from .reports import package_versions, write_json
from .weights import CheckedWeights, check_weights, load_modules, sha256_file


@dataclass
class StageOutcome:
    """What one run of a stage gives the build."""

    passed: bool
    outputs: list[Path]  # the files it wrote that the build ships (hashed into the report)
    result: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    status: str = "ran"  # "ran", "resumed", "failed"


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


def dataset_fingerprint(info: DatasetInfo) -> str:
    """data.yaml's bytes plus every image and label file's name, size and mtime (cheap; no image decoding), over the
    train and val splits as the preflight listed them."""
    entries = []
    for split in ("train", "val"):
        for image in info.images(split):
            label = label_path(image)
            stat = image.stat()
            lstat = label.stat() if label.is_file() else None
            entries.append((str(image), stat.st_size, stat.st_mtime_ns, lstat and (lstat.st_size, lstat.st_mtime_ns)))
    return _digest(sha256_file(info.yaml_path), entries)


def _folder_fingerprint(folder: str) -> str:
    """Every file's name, size and mtime under ``folder`` (camera sequences: cheap, no decoding)."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return _digest([(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


@dataclass
class Build:
    """What the stages share: the config, the folder, the inputs verified once, and what earlier stages made."""

    config: Config
    out: Path
    info: DatasetInfo
    teacher: CheckedWeights  # the teacher that teaches: as given, or finetuned by the first stage
    student_input: str  # the student .pt's sha256, or its model yaml's name
    data_fingerprint: str
    best: CheckedWeights | None = None  # train's best.pt, checked once for the stages after it
    exported: list[dict[str, Any]] = field(default_factory=list)  # export's files
    given_teacher: CheckedWeights | None = None  # the teacher as given (set by verify)
    pool: PoolInfo | None = None  # train.unlabeled, as its preflight accepted it

    @classmethod
    def verify(cls, config: Config, out: Path) -> Build:
        """Check the dataset and the weights once, before any stage runs."""
        t = config.train
        if t.teacher_modules:  # before anything is unpickled: the teacher may name their classes
            load_modules(t.teacher_modules)
        info = preflight(t.data, max_bad_fraction=t.max_bad_fraction)
        pool = preflight_pool(t.unlabeled, info, t.max_bad_fraction) if t.unlabeled else None
        owned = [out / name for name in (TRAIN_DIR, VALIDATION_DIR, EXPORT_DIR, BUILD_REPORT, BUILD_CONFIG, MODEL_CARD)]
        owned.append(out / SHA256SUMS)  # and OUT/train is cleared when its inputs change
        owned += [out / config.finetune.name] if config.finetune.enabled else []
        given = [t.data, t.teacher, t.student if t.student.endswith(".pt") else None]
        refuse_overwriting_inputs(owned, given, "--out", datasets=[*dataset_folders(t.data), *t.unlabeled])
        teacher = check_weights(t.teacher, t.teacher_sha256, "teacher", t.allow_unsafe_weights)
        student = sha256_file(t.student) if Path(t.student).is_file() else t.student
        fingerprint = dataset_fingerprint(info)
        return cls(config, out, info, teacher, student, fingerprint, given_teacher=teacher, pool=pool)


class Stage:
    """One stage of the build: its fingerprint (what decides whether it must run again) and its run."""

    name = ""

    def fingerprint(self, build: Build) -> str:
        raise NotImplementedError

    def run(self, build: Build) -> StageOutcome:
        raise NotImplementedError

    def hand_on(self, build: Build, record: StageRecord) -> None:
        """Pass what this stage made (run now or recorded earlier) to the stages after it."""


class FinetuneStage(Stage):
    """The teacher finetuned on the dataset first (finetune.enabled): the stages after it learn from that one."""

    name = "finetune"

    def fingerprint(self, build: Build) -> str:
        c = build.config
        modules = [sha256_file(m) if Path(m).is_file() else m for m in c.train.teacher_modules]
        train = c.train.model_dump(include={"imgsz", "batch", "seed", "deterministic", "amp", "ultralytics"})
        settings = (c.finetune.model_dump(), train, c.distill.class_map, modules)
        return _digest("finetune", settings, build.data_fingerprint, build.teacher.sha256)

    def run(self, build: Build) -> StageOutcome:
        from .finetune import finetune

        config = build.config.model_copy(deep=True)
        config.train.out = str(build.out)
        run = build.out / config.finetune.name
        given = {"info": build.info, "teacher": build.teacher}
        if weights_file(run, LAST).is_file() and not (run / TRAIN_REPORT).is_file():
            result, status = finetune(config, resume=str(run), **given), "resumed"
        else:
            if run.exists():
                shutil.rmtree(run)  # inputs changed: start clean
            config.train.exist_ok = True
            result, status = finetune(config, **given), "ran"
        files = [Path(result.best), run / TRAIN_REPORT, run / FINETUNE_REPORT]
        return StageOutcome(True, files, result.to_dict(), status=status)

    def hand_on(self, build: Build, record: StageRecord) -> None:
        from .finetune import finetuned_teacher

        build.teacher = finetuned_teacher(record.result["best"], build.teacher)


class TrainStage(Stage):
    name = "train"

    def fingerprint(self, build: Build) -> str:
        t = build.config.train
        settings = t.model_dump(exclude={"device", "workers", "out", "name", "exist_ok"})
        distill = build.config.distill.model_dump()
        pool = build.pool.sha256 if build.pool else None  # the pool's content, not only its folders' names
        inputs = (build.data_fingerprint, build.teacher.sha256, build.student_input, pool)
        return _digest("train", settings, distill, *inputs)

    def run(self, build: Build) -> StageOutcome:
        from . import distill

        run = build.out / TRAIN_DIR
        stage_config = build.config.model_copy(deep=True)
        t = stage_config.train
        t.out, t.name, t.exist_ok = str(build.out), TRAIN_DIR, True
        if build.teacher is not build.given_teacher:  # finetuned by the first stage: that file, pinned as we wrote it
            t.teacher, t.teacher_sha256 = build.teacher.path, build.teacher.sha256
        stage_config.validation.after_train = False  # the build validates in its own stage
        status = "ran"
        given = {"info": build.info, "teacher": build.teacher}
        if weights_file(run, LAST).is_file() and not (run / TRAIN_REPORT).is_file():  # the run's own pool list
            result, status = distill.train(stage_config, resume=str(run), **given), "resumed"
        else:
            if run.exists():
                shutil.rmtree(run)  # inputs changed: start clean, never mix two runs' epochs
            result = distill.train(stage_config, **given, pool=build.pool)
        if not result.best:
            return StageOutcome(False, [], result.to_dict(), ["training wrote no best.pt"], "failed")
        files = [Path(result.best), Path(result.results_csv), Path(result.batch_log), run / TRAIN_REPORT]
        return StageOutcome(True, files, result.to_dict(), status=status)

    def hand_on(self, build: Build, record: StageRecord) -> None:
        if not record.passed:  # no student: nothing after this can run
            raise _Stopped("train", "; ".join(record.failures), StageFailure)
        t = build.config.train
        build.best = check_weights(record.result["best"], None, "student", t.allow_unsafe_weights)


class ValidateStage(Stage):
    name = "validate"

    def fingerprint(self, build: Build) -> str:
        c = build.config
        settings = c.validation.model_dump()
        sequences = _folder_fingerprint(c.validation.sequences) if c.validation.sequences else None
        return _digest(
            "validate", settings, build.best.sha256, build.teacher.sha256, build.data_fingerprint, c.validation_imgsz,
            c.validation_device, sequences,
        )  # fmt: skip

    def run(self, build: Build) -> StageOutcome:
        from .validate import validate_from_config

        vdir = build.out / VALIDATION_DIR
        report = validate_from_config(build.config, vdir, build.best, info=build.info, teacher=build.teacher)
        failures = [f"gate {g.describe()}" for g in report.failed_gates]
        files = [vdir / VALIDATION_JSON, vdir / VALIDATION_MD, vdir / VALIDATION_PNG]
        result = {"passed": report.passed, "retention": report.retention, "teacher_agreement": report.teacher_agreement}
        return StageOutcome(report.passed, files, result, failures)


class ExportStage(Stage):
    name = "export"

    def fingerprint(self, build: Build) -> str:
        e, t = build.config.export, build.config.train
        return _digest("export", e.model_dump(), build.best.sha256, build.data_fingerprint if e.int8 else None, t.imgsz)

    def run(self, build: Build) -> StageOutcome:
        from .export import export

        c, edir = build.config, build.out / EXPORT_DIR
        result = export(
            build.best,
            edir,
            c.export,
            imgsz=c.export.imgsz,  # else the camera profile validate chose, else as trained
            data=c.train.data,
            validation_report=build.out / VALIDATION_DIR / VALIDATION_JSON,
            teacher_sha256=build.teacher.sha256,
            calibration_images=build.info.images("val"),
        )
        made = [Path(f.path) for f in result.files]  # a folder (OpenVINO, NCNN) ships each of its files
        files = [p for m in made for p in (sorted(m.rglob("*")) if m.is_dir() else [m])] + [edir / EXPORT_REPORT]
        return StageOutcome(True, files, {"files": [asdict(f) for f in result.files]})

    def hand_on(self, build: Build, record: StageRecord) -> None:
        build.exported = record.result["files"]


class ParityStage(Stage):
    name = "parity"

    def fingerprint(self, build: Build) -> str:
        files = [f["sha256"] for f in build.exported]
        return _digest("parity", build.config.parity.model_dump(), build.best.sha256, files, build.data_fingerprint)

    def run(self, build: Build) -> StageOutcome:
        from .parity import parity

        c, edir = build.config, build.out / EXPORT_DIR
        files, results, failures, known_map50 = [], {}, [], {}
        for f in build.exported:  # the fp32 file of the fp16/int8 mAP50 drop: their sibling, scored once
            given = {"data": c.train.data, "out": edir, "info": build.info, "known_map50": known_map50}
            r = parity(build.best, f["path"], c.parity, **given)
            results[file_key(f)] = {
                "passed": r.passed,
                "problems": r.problems,
                "map50": r.map50,
                "tensors": [asdict(d) for d in r.tensors],
                "detections": asdict(r.detections),
            }
            files.append(Path(r.report))
            failures += [f"{f['variant']}: {problem}" for problem in r.problems]
        return StageOutcome(not failures, files, results, failures)


STAGES: tuple[Stage, ...] = (TrainStage(), ValidateStage(), ExportStage(), ParityStage())


def stages(config: Config) -> tuple[Stage, ...]:
    """The build's stages in order: finetune first when it is on."""
    return ((FinetuneStage(),) if config.finetune.enabled else ()) + STAGES


class _Stopped(Exception):
    """A stage that later stages cannot run after; ``error`` is the class (so the exit code) the build ends with."""

    def __init__(self, stage: str, reason: str, error: type[WildfireKDError]):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.error = stage, error


class _Runner:
    """Runs the stages in order, skipping one whose fingerprint and recorded outputs are unchanged."""

    def __init__(self, build: Build, previous: dict[str, Any] | None):
        self.build = build
        self.previous = {s["name"]: s for s in (previous or {}).get("stages", [])}
        self.records: list[StageRecord] = []

    def _outputs(self, paths: list[Path]) -> dict[str, str]:
        return {str(p.relative_to(self.build.out)): sha256_file(p) for p in paths if p.is_file()}

    def _unchanged(self, name: str, fingerprint: str) -> dict[str, Any] | None:
        """The previous record of this stage when its inputs are the same and its outputs are intact."""
        prev = self.previous.get(name)
        if not prev or prev["fingerprint"] != fingerprint or prev["status"] == "failed" and not prev["result"]:
            return None
        for rel, digest in prev["outputs"].items():
            path = self.build.out / rel
            if not path.is_file() or sha256_file(path) != digest:
                return None
        return prev

    def run_all(self) -> BuildResult:
        """Every stage; one reruns when its fingerprint or anything upstream changed (the export's metadata carries
        the validation figures, so a new validation means a new export)."""
        changed = False
        for stage in stages(self.build.config):
            record = self.stage(stage, upstream_changed=changed)
            changed = changed or record.status != "skipped"
            stage.hand_on(self.build, record)
        return BuildResult(str(self.build.out), all(r.passed for r in self.records), self.records)

    def stage(self, stage: Stage, upstream_changed: bool) -> StageRecord:
        fingerprint = stage.fingerprint(self.build)
        prev = None if upstream_changed else self._unchanged(stage.name, fingerprint)
        if prev is not None:
            record = StageRecord(**{**prev, "status": "skipped", "seconds": 0.0})
        else:
            start = time.time()
            try:
                outcome = stage.run(self.build)
            except (GateFailure, StageFailure) as e:  # divergence, or a stage's own tool broke: stop here
                seconds = round(time.time() - start, 2)
                self.records.append(StageRecord(stage.name, "failed", False, seconds, fingerprint, failures=[str(e)]))
                raise _Stopped(stage.name, str(e), type(e)) from e
            seconds = round(time.time() - start, 2)
            outputs = self._outputs(outcome.outputs)
            record = StageRecord(
                stage.name, outcome.status, outcome.passed, seconds, fingerprint, outputs, outcome.result,
                outcome.failures,
            )  # fmt: skip
        self.records.append(record)
        return record


def build(config: Config, out: str | Path) -> BuildResult:
    """Run every stage into ``out``; write build_report.json, MODEL_CARD.md and SHA256SUMS."""
    t = config.train
    if not t.data or not t.teacher:
        raise InputError("build needs a dataset and a teacher: pass --data and --teacher (or set train.data/teacher)")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    previous_report = out / BUILD_REPORT
    previous = json.loads(previous_report.read_text(encoding="utf-8")) if previous_report.is_file() else None
    state = Build.verify(config, out)  # once: the stages receive it
    runner = _Runner(state, previous)
    started = time.time()
    try:
        result = runner.run_all()
    except _Stopped as stop:
        result = BuildResult(str(out), False, runner.records)
        write_json(
            out / BUILD_REPORT,
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
    _write_outputs(state, result, round(time.time() - started, 2))
    _track_build(config, out, result)
    return result


def _track_build(config: Config, out: Path, result: BuildResult) -> None:
    """The build's figures and files into the training run's trackers (train.loggers), the same MLflow run."""
    if not config.train.loggers:
        return
    from .distill.stage import track_summary
    from .validate import ValidationResult

    stage_config = config.model_copy(deep=True)
    stage_config.train.out = str(out)  # as the train stage ran it: OUT/train, OUT/mlflow.db
    files = [Path(f["path"]) for f in result.stage("export").result["files"]]
    files += [out / BUILD_REPORT, out / MODEL_CARD, out / SHA256SUMS, out / EXPORT_DIR / EXPORT_REPORT]
    files += [out / VALIDATION_DIR / name for name in (VALIDATION_JSON, VALIDATION_MD)]
    figures = {
        "validation": ValidationResult.load(out / VALIDATION_DIR / VALIDATION_JSON).summary(),
        "build": {"passed": result.passed, "failures": "; ".join(result.failures) or "none"},
    }
    track_summary(stage_config, out / TRAIN_DIR, figures, files)


def _write_outputs(build: Build, result: BuildResult, seconds: float) -> None:
    from .model_card import model_card

    config, out, t = build.config, build.out, build.config.train
    save_config(config, out / BUILD_CONFIG)
    atomic_write_text(out / MODEL_CARD, model_card(config, result, build.info))
    shipped = sorted({rel for s in result.stages for rel in s.outputs} | {MODEL_CARD, BUILD_CONFIG})
    outputs = {rel: sha256_file(out / rel) for rel in shipped}
    report = {
        "passed": result.passed,
        "failures": result.failures,
        "seconds": seconds,
        "stages": [asdict(s) for s in result.stages],
        "config_sha256": config.digest(),
        "config": config.model_dump(mode="json"),
        "inputs": {
            "data": {
                "yaml": str(Path(t.data).resolve()),
                "sha256": sha256_file(t.data),
                "fingerprint": build.data_fingerprint,
            },
            "teacher": {"path": str(Path(t.teacher).resolve()), "sha256": build.given_teacher.sha256},
            "student": {"path": t.student, "sha256": sha256_file(t.student) if Path(t.student).is_file() else None},
        },
        "outputs": outputs,
        "versions": package_versions(),
    }
    if build.pool is not None:
        report["inputs"]["unlabeled"] = build.pool.summary()
    if build.teacher is not build.given_teacher:
        report["inputs"]["finetuned_teacher"] = {"path": build.teacher.path, "sha256": build.teacher.sha256}
    write_json(out / BUILD_REPORT, report)
    outputs[BUILD_REPORT] = sha256_file(out / BUILD_REPORT)
    atomic_write_text(out / SHA256SUMS, "".join(f"{digest}  {rel}\n" for rel, digest in sorted(outputs.items())))
