"""The `train` stage: check inputs, then distil the teacher into the student with DistillationTrainer."""

from __future__ import annotations

import difflib
import json
import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, load_config, save_config
from ..data import DatasetInfo, check_class_names, preflight, write_preflight_report
from ..errors import InputError
from ..layout import BATCH_LOG, LAST, PREFLIGHT, RUN_CONFIG, TRAIN_REPORT, VALIDATION_DIR, weights_file
from ..reports import write_json
from ..runtime import prepare_ultralytics
from ..weights import check_weights, load_checked, model_class_names, ultralytics_loading

log = logging.getLogger("wildfire_kd")

CONFIG_NAME, REPORT_NAME, PREFLIGHT_NAME = RUN_CONFIG, TRAIN_REPORT, PREFLIGHT

# ultralytics arguments that this config owns: set them through `train.*` / `distill.*`, not `train.ultralytics`
_OWNED = {
    "model", "data", "epochs", "patience", "imgsz", "batch", "device", "workers", "optimizer", "lr0", "lrf",
    "momentum", "weight_decay", "warmup_epochs", "cos_lr", "freeze", "seed", "deterministic", "amp", "val", "plots",
    "save_period", "close_mosaic", "cache", "project", "name", "exist_ok", "resume", "distill_model", "dis", "mode",
    "task",
}  # fmt: skip


@dataclass
class TrainResult:
    run_dir: str
    best: str | None
    last: str | None
    results_csv: str
    batch_log: str
    epochs_completed: int
    skipped_steps: int
    seconds: float
    final_metrics: dict[str, float] = field(default_factory=dict)
    config_sha256: str = ""
    validation: dict[str, Any] | None = None  # the after-train comparison: passed, report, failed gates
    peak_gpu_memory_mb: float | None = None  # torch.cuda.max_memory_allocated during training (CUDA only)

    @property
    def passed(self) -> bool:
        return self.validation is None or bool(self.validation["passed"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ultralytics_overrides(config: Config) -> dict[str, Any]:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    t, d = config.train, config.distill
    extra = dict(t.ultralytics)
    for key in extra:
        if key in _OWNED:
            raise InputError(f"train.ultralytics.{key}: set this through the config's own key instead")
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(key, list(DEFAULT_CFG_DICT), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InputError(f"train.ultralytics.{key}: not an ultralytics train argument{hint}")
    overrides = {
        "model": t.student,
        "data": str(Path(t.data).resolve()),
        "epochs": t.epochs,
        "patience": t.patience,
        "imgsz": t.imgsz,
        "batch": t.batch,
        "device": t.device or None,
        "workers": t.workers,
        "optimizer": t.optimizer,
        "lr0": t.lr0,
        "lrf": t.lrf,
        "momentum": t.momentum,
        "weight_decay": t.weight_decay,
        "warmup_epochs": t.warmup_epochs,
        "cos_lr": t.cos_lr,
        "freeze": t.freeze,
        "seed": t.seed,
        "deterministic": t.deterministic,
        "amp": t.amp,
        "val": t.val,
        "plots": t.plots,
        "save_period": t.save_period,
        "close_mosaic": t.close_mosaic,
        "cache": t.cache,
        "project": str(Path(t.out).resolve()),
        "name": t.name,
        "exist_ok": t.exist_ok,
        **extra,
    }
    if d.feature_distillation:
        overrides["distill_model"] = str(Path(t.teacher).resolve())
        overrides["dis"] = d.feature_weight
    return overrides


def check_inputs(
    config: Config, resume_checkpoint: Path | None = None, info: DatasetInfo | None = None
) -> tuple[DatasetInfo, bool]:
    """Everything that can be checked before training starts: exit 2 now rather than an hour in.

    ``info``: the preflight of ``train.data`` when the caller already ran it (the build). Returns the preflight and
    whether a weights file the trainer loads needs full unpickling (allowed: pinned or
    opted in; see wildfire_kd.weights): the trainer then runs inside ``ultralytics_loading(True)``.
    """
    t, d = config.train, config.distill
    if not t.data:
        raise InputError("no dataset: pass --data path/to/data.yaml (or set train.data)")
    if info is None:
        info = preflight(t.data, max_bad_fraction=t.max_bad_fraction)
    if t.loggers:
        from ..tracking import check_available

        check_available(t.loggers)
    full = False
    if resume_checkpoint is not None:  # the run's own checkpoint: weights-only like any other file
        full |= check_weights(resume_checkpoint, None, "resume checkpoint", t.allow_unsafe_weights)
    if t.student.endswith(".pt"):
        full |= check_weights(t.student, t.student_sha256, "student", t.allow_unsafe_weights)
    elif not t.student.endswith((".yaml", ".yml")):
        raise InputError(
            f"train.student={t.student!r}: expected a .pt checkpoint or a model .yaml such as yolov8n.yaml"
        )
    needs_teacher = d.response or d.feature_distillation
    if needs_teacher:
        if not t.teacher:
            raise InputError(
                "no teacher: pass --teacher path/to/teacher.pt (or set distill.response=false for plain training)"
            )
        teacher_full = check_weights(t.teacher, t.teacher_sha256, "teacher", t.allow_unsafe_weights)
        full |= teacher_full
        with ultralytics_loading(teacher_full):
            teacher = load_checked(t.teacher, "teacher")
        check_class_names(model_class_names(teacher), info.names, t.teacher, t.data)
        if d.response and d.method == "dense":
            from .loss import check_dense_compatible

            with ultralytics_loading(full):
                student = _student_model(config, info.nc)
            check_dense_compatible(teacher, student, t.teacher)
        del teacher
    return info, full


def _student_model(config: Config, nc: int):
    """The student as training will build it (a .yaml from scratch, or the .pt), for checks before training."""
    t = config.train
    if t.student.endswith(".pt"):
        return load_checked(t.student, "student")  # check_inputs checked it
    from ultralytics.nn.tasks import DetectionModel

    try:
        return DetectionModel(t.student, nc=nc, verbose=False)
    except FileNotFoundError as e:
        raise InputError(f"train.student={t.student!r}: no such model yaml ({e}); e.g. yolov8n.yaml") from None


# changing these on resume is harmless: they decide where and how fast, not what is learnt
_RESUME_MAY_CHANGE = {"train.device", "train.workers"}


def _resume_config(resume: str, config: Config, force: bool) -> tuple[Config, Path]:
    path = Path(resume)
    last = weights_file(path, LAST) if path.is_dir() else path
    if not last.is_file():
        raise InputError(f"--resume {resume}: no checkpoint at {last} (pass a run folder or its weights/last.pt)")
    run_dir = last.parent.parent
    saved = run_dir / CONFIG_NAME
    if not saved.is_file():
        raise InputError(f"--resume {resume}: {saved} is missing, so the run's teacher and KD settings are unknown")
    resumed = load_config(saved)
    saved_values, given = resumed.model_dump(), config.model_dump()
    differ = []
    for key in sorted(config.explicit_keys - _RESUME_MAY_CHANGE):
        section, _, name = key.partition(".")
        old, new = saved_values.get(section, {}).get(name), given.get(section, {}).get(name)
        if old != new:
            differ.append(f"{key} ({old!r} in the run, {new!r} now)")
    if differ and not force:
        raise InputError(
            f"--resume {run_dir}: the run was started with other settings, which resuming would silently ignore: "
            f"{'; '.join(differ)}. Start a new run to change them, or pass --force to resume with the run's own"
        )
    if differ:
        log.warning("resuming %s with its own settings; ignored: %s", run_dir, "; ".join(differ))
    resumed.train.device = config.train.device
    resumed.train.workers = config.train.workers
    return resumed, last


def train(
    config: Config,
    resume: str | None = None,
    callbacks: dict[str, list] | None = None,
    force: bool = False,
    info: DatasetInfo | None = None,
) -> TrainResult:
    """Distil ``config.train.teacher`` into ``config.train.student``; returns where everything was written.

    ``resume``: a run folder (or its weights/last.pt) to continue; a finished run is returned as it is.
    ``info``: the preflight of ``train.data`` when the caller already ran it.
    SIGTERM finishes the current step and raises TrainingTerminated (exit 143); completed epochs are kept.
    """
    prepare_ultralytics()
    last_ckpt = None
    if resume:
        config, last_ckpt = _resume_config(resume, config, force)
        report = last_ckpt.parent.parent / REPORT_NAME
        if report.is_file():
            log.info("%s already finished; nothing to resume", last_ckpt.parent.parent)
            return TrainResult(**json.loads(report.read_text(encoding="utf-8")))
    info, full_unpickling = check_inputs(config, last_ckpt, info)
    trainer = _trainer(config, info, last_ckpt, callbacks, full_unpickling)
    run_dir = Path(trainer.save_dir)
    if last_ckpt is None:
        save_config(config, run_dir / CONFIG_NAME)
        write_preflight_report(info, run_dir / PREFLIGHT_NAME, config.train.max_bad_fraction)
    start = time.time()
    with _terminate_on_sigterm(trainer), ultralytics_loading(full_unpickling):
        _run(trainer, run_dir, resumed=last_ckpt is not None)
    result = TrainResult(
        run_dir=str(run_dir),
        best=str(trainer.best) if trainer.best.exists() else None,
        last=str(trainer.last) if trainer.last.exists() else None,
        results_csv=str(trainer.csv),
        batch_log=str(run_dir / BATCH_LOG),
        epochs_completed=trainer.epoch + 1,
        skipped_steps=trainer.skipped_steps,
        seconds=round(time.time() - start, 2),
        final_metrics={k: float(v) for k, v in (trainer.metrics or {}).items()},
        config_sha256=config.digest(),
        peak_gpu_memory_mb=_peak_gpu_memory_mb(trainer),
    )
    if config.validation.after_train and config.train.teacher and result.best:
        result.validation = _validate_against_teacher(config, result.best, run_dir / VALIDATION_DIR)
        track_summary(config, run_dir, {"validation": _summary_of(run_dir / VALIDATION_DIR)})
    write_json(run_dir / REPORT_NAME, result.to_dict())
    return result


def _trainer(config: Config, info: DatasetInfo, last_ckpt: Path | None, callbacks: dict[str, list] | None, full: bool):
    """The DistillationTrainer for this config (continuing ``last_ckpt`` when resuming), with extra callbacks;
    ``full``: a checkpoint ultralytics loads was allowed full unpickling (DDP workers must know)."""
    from .trainer import DistillationTrainer, KDRun

    t = config.train
    kd = KDRun(
        teacher=str(Path(t.teacher).resolve()) if t.teacher else None,
        teacher_sha256=t.teacher_sha256,
        allow_unsafe_weights=t.allow_unsafe_weights,
        distill=config.distill.model_dump(),
        grad_clip=t.grad_clip,
        max_consecutive_skipped=t.max_consecutive_skipped,
        tolerated_images=sorted({Path(p).name for p in info.bad_images}),
        full_unpickling=full,
        loggers=list(t.loggers),
        tracking_out=str(Path(t.out).resolve()),
        tracking_params=_tracked_params(config),
    )
    overrides = _ultralytics_overrides(config)
    if last_ckpt is not None:
        overrides = {
            "resume": str(last_ckpt),
            "save_dir": str(last_ckpt.parent.parent),  # a stripped checkpoint no longer records its folder
            "device": overrides["device"],
            "workers": overrides["workers"],
        }
    trainer = DistillationTrainer(overrides=overrides, kd=kd)
    for event, fns in (callbacks or {}).items():
        for fn in fns:
            trainer.add_callback(event, fn)
    return trainer


def _run(trainer, run_dir: Path, resumed: bool) -> None:
    try:
        trainer.train()
    except AssertionError as e:  # ultralytics asserts when every epoch is done but the run was not finalised
        if not resumed or "nothing to resume" not in str(e):
            raise
        # killed after the last epoch's checkpoint but before the run was finalised: finalise it now
        log.info("%s: every epoch was already trained; finalising the run", run_dir)
        trainer.epoch = trainer.epochs - 1
        trainer.final_eval()
    finally:
        trainer.restore_run_env()


def _tracked_params(config: Config) -> dict[str, Any]:
    from ..tracking import flatten

    return flatten(config.model_dump(mode="json"))


def _summary_of(validation_dir: Path) -> dict[str, Any]:
    """The figures a tracker keeps from a student-vs-teacher report."""
    from ..validate import JSON_NAME

    v = json.loads((validation_dir / JSON_NAME).read_text(encoding="utf-8"))
    return {
        "passed": v["passed"],
        "student": {k: v["student"][k] for k in ("precision", "recall", "map50", "map50_95", "latency_ms")},
        "teacher": {k: v["teacher"][k] for k in ("precision", "recall", "map50", "map50_95", "latency_ms")},
        "retention": v["retention"],
        "teacher_agreement": v["teacher_agreement"],
        "gates": {g["name"]: "passed" if g["passed"] else "failed" for g in v["gates"]},
    }


def track_summary(config: Config, run_dir: Path, figures: dict[str, Any], artifacts: list[Path] = ()) -> None:
    """Add end-of-run figures (and files) to the run's trackers, continuing the same MLflow run."""
    if not config.train.loggers:
        return
    from ..tracking import Trackers

    trackers = Trackers.open(run_dir, config.train.loggers, Path(config.train.out).resolve(), _tracked_params(config))
    try:
        trackers.log_summary(figures)
        trackers.log_artifacts(list(artifacts))
    finally:
        trackers.close()


def _peak_gpu_memory_mb(trainer) -> float | None:
    import torch

    if trainer.device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(trainer.device) / 2**20, 1)


@contextmanager
def _terminate_on_sigterm(trainer):
    """`docker stop` sends SIGTERM: let the current step finish, then stop (the trainer raises at batch end)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        log.warning("SIGTERM: finishing the current step, then stopping")
        trainer.terminate_requested = True

    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _validate_against_teacher(config: Config, best: str, out: Path) -> dict[str, Any]:
    from ..validate import JSON_NAME, validate_from_config

    report = validate_from_config(config, out, student=best)
    return {
        "passed": report.passed,
        "report": str(out / JSON_NAME),
        "failed_gates": [g.describe() for g in report.failed_gates],
        "map50_retention": report.retention["map50"],
        "teacher_agreement": report.teacher_agreement,
    }
