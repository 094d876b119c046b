"""The `train` stage: check the inputs once, then distil the teacher into the student with DistillationTrainer
(trainer.py; its objective is loss.py, its hooks into ultralytics are ../seam.py). Start at :func:`train`."""

from __future__ import annotations

import difflib
import json
import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import Config, load_config, save_config
from ..data import DatasetInfo, TeacherClasses, dataset_folders, preflight, teacher_classes, write_preflight_report
from ..errors import InputError
from ..guard import lock_folder, refuse_overwriting_inputs, releases_its_locks
from ..layout import BATCH_LOG, LAST, PREFLIGHT, RUN_CONFIG, TRAIN_REPORT, VALIDATION_DIR, VALIDATION_JSON, weights_file
from ..pool import PoolInfo, preflight_pool, read_run_list, update_run_report, write_run_files
from ..reports import write_json
from ..ultralytics_env import prepare_ultralytics
from ..weights import CheckedWeights, check_weights, load_checked, load_modules, model_class_names, ultralytics_loading

log = logging.getLogger("wildfire_kd")

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
    teacher_classes: dict[str, Any] | None = None  # the teacher's classes and which answered for the dataset's
    unlabeled: dict[str, Any] | None = None  # train.unlabeled: how many frames taught, from where (unlabeled.json)

    @property
    def passed(self) -> bool:
        return self.validation is None or bool(self.validation["passed"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> TrainResult:
        """A train.json, also one written by another version: unknown fields are ignored, missing ones default
        (``epochs_completed`` and the like to 0), so resuming or summarising an older run never fails on its report."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable training report ({e}); remove it to finish the run again") from e
        if not isinstance(raw, dict) or "run_dir" not in raw:
            raise InputError(f"{path}: not a training report of wildfire-kd; remove it to finish the run again")
        defaults = {"best": None, "last": None, "results_csv": "", "batch_log": "", "epochs_completed": 0,
                    "skipped_steps": 0, "seconds": 0.0}  # fmt: skip
        known = {f.name for f in fields(cls)}
        return cls(**{**defaults, **{k: v for k, v in raw.items() if k in known}})


@dataclass
class TrainInputs:
    """What `check_inputs` verified, handed to the trainer so nothing is checked or unpickled twice."""

    info: DatasetInfo
    teacher: CheckedWeights | None  # None for plain training
    teacher_model: Any = None  # the teacher as loaded for the checks, answering for the dataset's classes
    full_unpickling: bool = False  # a file ultralytics loads itself needs full unpickling (pinned or opted in)
    teacher_classes: TeacherClasses | None = None
    pool: PoolInfo | None = None  # train.unlabeled, as its preflight accepted it


def _ultralytics_overrides(config: Config) -> dict[str, Any]:
    t, d = config.train, config.distill
    extra = check_ultralytics_args(t.ultralytics)
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


def check_ultralytics_args(extra: dict[str, Any]) -> dict[str, Any]:
    """train.ultralytics, each key checked: not one this config owns, an argument ultralytics knows, and a value its
    own check (type, range) accepts: exit 2 naming the key now rather than deep inside its trainer."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg

    for key, value in extra.items():
        if key in _OWNED:
            raise InputError(f"train.ultralytics.{key}: set this through the config's own key instead")
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(key, list(DEFAULT_CFG_DICT), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InputError(f"train.ultralytics.{key}: not an ultralytics train argument{hint}")
        try:
            check_cfg({key: value}, hard=True)
        except (TypeError, ValueError) as e:
            why = " ".join(str(e).split())
            raise InputError(f"train.ultralytics.{key}: {value!r} refused by ultralytics ({why})") from None
    return dict(extra)


def check_inputs(
    config: Config,
    resume_checkpoint: Path | None = None,
    info: DatasetInfo | None = None,
    teacher: CheckedWeights | None = None,
    finetune: bool = False,
    pool: PoolInfo | None = None,
) -> TrainInputs:
    """Everything that can be checked before training starts: exit 2 now rather than an hour in.

    ``info``, ``teacher`` and ``pool``: the preflight of ``train.data``, the checked teacher and the unlabelled
    pool's preflight when the caller already has them (the build). Returns what was verified, with the teacher loaded
    once; when a file ultralytics loads itself needs full unpickling (allowed: pinned or opted in; see
    wildfire_kd.weights) the trainer runs inside ``ultralytics_loading(True)``.
    """
    t, d = config.train, config.distill
    if not t.data:
        raise InputError("no dataset: pass --data path/to/data.yaml (or set train.data)")
    prepare_ultralytics()
    check_ultralytics_args(t.ultralytics)
    if t.teacher_modules:  # before anything is unpickled: the checkpoints may name their classes
        load_modules(t.teacher_modules)
    if info is None:
        info = preflight(t.data, max_bad_fraction=t.max_bad_fraction)
    if t.unlabeled and pool is None:  # resuming: the frames the run trained on, not the folders as they are now
        listed = read_run_list(resume_checkpoint.parent.parent) if resume_checkpoint is not None else None
        pool = preflight_pool(t.unlabeled, info, t.max_bad_fraction, listed)
    if resume_checkpoint is None:  # a new run folder, or with exist_ok an existing one written into
        given = [t.teacher, t.student if t.student.endswith(".pt") else None] if t.exist_ok else []
        flag = "--out (train.out / train.name)"
        datasets = [*dataset_folders(t.data), *t.unlabeled]  # neither a dataset nor a pool is ever written to
        refuse_overwriting_inputs([Path(t.out) / t.name], given, flag, datasets=datasets)
    if t.loggers:
        from ..tracking import check_available

        check_available(t.loggers)
    student, full = _checked_student(config, resume_checkpoint, teacher, finetune)
    inputs = TrainInputs(info, None, None, full, pool=pool)
    teacher = None if finetune else teacher
    if finetune:  # the model trained is the teacher itself: it must answer for the dataset's classes
        inputs.teacher_classes = _mapped(config, model_class_names(load_checked(student)), t.student, info)
    if d.response or d.feature_distillation:
        if not t.teacher:
            raise InputError(
                "no teacher: pass --teacher path/to/teacher.pt (or set distill.response=false for plain training)"
            )
        inputs.teacher = teacher or check_weights(t.teacher, t.teacher_sha256, "teacher", t.allow_unsafe_weights)
        inputs.full_unpickling |= inputs.teacher.full_unpickling
        inputs.teacher_model = _checked_teacher(config, inputs, student)
    return inputs


def _checked_student(
    config: Config, resume_checkpoint: Path | None, teacher: CheckedWeights | None, finetune: bool
) -> tuple[CheckedWeights | None, bool]:
    """The student .pt checked (None for a model yaml), and whether a file ultralytics loads needs full
    unpickling (the student, or the run's own checkpoint when resuming)."""
    t = config.train
    full = False
    if resume_checkpoint is not None:  # the run's own checkpoint: weights-only like any other file, except that a
        # finetuned teacher holds the teacher's own classes, allowed as the teacher was (its pin)
        allowed = t.allow_unsafe_weights or (finetune and t.student_sha256 is not None)
        full |= check_weights(resume_checkpoint, None, "resume checkpoint", allowed).full_unpickling
    student = None
    if finetune and teacher is not None:  # the model trained is the teacher, checked by the caller
        student = teacher
        full |= student.full_unpickling
    elif t.student.endswith(".pt"):
        student = check_weights(t.student, t.student_sha256, "student", t.allow_unsafe_weights)
        full |= student.full_unpickling
    elif not t.student.endswith((".yaml", ".yml")):
        raise InputError(
            f"train.student={t.student!r}: expected a .pt checkpoint or a model .yaml such as yolov8n.yaml"
        )
    return student, full


def _mapped(config: Config, model_names: list[str], path: str, info: DatasetInfo) -> TeacherClasses:
    """How the model's classes answer for the dataset's (by name, distill.class_map); said in the log when it is
    not simply the same list."""
    mapped = teacher_classes(model_names, info.names, config.distill.class_map, path, config.train.data)
    if not mapped.identical:
        log.info("%s", mapped.describe())
    return mapped


def _checked_teacher(config: Config, inputs: TrainInputs, student: CheckedWeights | None):
    """The teacher, loaded once, answering for the dataset's classes; for `dense`, its head against the student's."""
    t, d = config.train, config.distill
    from ..seam import answering_for

    teacher = load_checked(inputs.teacher)
    inputs.teacher_classes = _mapped(config, model_class_names(teacher), t.teacher, inputs.info)
    teacher = answering_for(teacher, inputs.teacher_classes)
    if d.response and d.method == "dense":
        from .loss import check_dense_compatible

        check_dense_compatible(teacher, _student_model(config, inputs.info.nc, student), t.teacher)
    return teacher


def _student_model(config: Config, nc: int, student: CheckedWeights | None):
    """The student as training will build it (a .yaml from scratch, or the checked .pt), for checks before training."""
    t = config.train
    if student is not None:
        return load_checked(student)
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
    saved = run_dir / RUN_CONFIG
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


@releases_its_locks
def train(
    config: Config,
    resume: str | None = None,
    callbacks: dict[str, list] | None = None,
    force: bool = False,
    info: DatasetInfo | None = None,
    teacher: CheckedWeights | None = None,
    finetune: bool = False,
    pool: PoolInfo | None = None,
) -> TrainResult:
    """Distil ``config.train.teacher`` into ``config.train.student``; returns where everything was written.
    ``finetune``: train ``config.train.student`` (a loaded teacher) as it is, custom blocks and all, on the data's
    classes (`wildfire-kd finetune`; the config then has no teacher).

    ``resume``: a run folder (or its weights/last.pt) to continue; a finished run is returned as it is.
    ``info``, ``teacher``, ``pool``: the preflights of ``train.data`` and the pool, the checked teacher, if known.
    SIGTERM finishes the current step and raises TrainingTerminated (exit 143); completed epochs are kept.
    """
    prepare_ultralytics()
    last_ckpt = None
    if resume:
        config, last_ckpt = _resume_config(resume, config, force)
        report = last_ckpt.parent.parent / TRAIN_REPORT
        if report.is_file():
            log.info("%s already finished; nothing to resume", last_ckpt.parent.parent)
            return TrainResult.load(report)
    inputs = check_inputs(config, last_ckpt, info, teacher, finetune, pool)
    if last_ckpt is not None or config.train.exist_ok:  # a run folder named in advance: one run at a time in it
        _lock_run(last_ckpt.parent.parent if last_ckpt is not None else Path(config.train.out) / config.train.name)
    trainer = _trainer(config, inputs, last_ckpt, callbacks, finetune)
    run_dir = _lock_run(Path(trainer.save_dir))  # a new folder ultralytics numbered is ours alone: a no-op then
    _record_inputs(config, inputs, trainer, resumed=last_ckpt is not None)
    start = time.time()
    with _terminate_on_sigterm(trainer), ultralytics_loading(inputs.full_unpickling):
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
        teacher_classes=inputs.teacher_classes.to_dict() if inputs.teacher_classes else None,
        unlabeled=_pool_taught(trainer, run_dir),
    )
    if config.validation.after_train and config.train.teacher and result.best:
        result.validation = _after_train_validation(config, result.best, run_dir, inputs)
    write_json(run_dir / TRAIN_REPORT, result.to_dict())
    return result


def _after_train_validation(config: Config, best: str, run_dir: Path, inputs: TrainInputs) -> dict[str, Any]:
    """best.pt against its teacher into RUN/validation: train.json's summary of it."""
    validation = _validate_against_teacher(config, best, run_dir / VALIDATION_DIR, inputs)
    track_summary(config, run_dir, {"validation": validation.summary()})
    return {
        "passed": validation.passed,
        "report": str(run_dir / VALIDATION_DIR / VALIDATION_JSON),
        "failed_gates": [g.describe() for g in validation.failed_gates],
        "map50_retention": validation.retention["map50"],
        "teacher_agreement": validation.teacher_agreement,
    }


def _lock_run(run_dir: Path) -> Path:
    """One run at a time per run folder (guard.lock_folder: exit 2 naming the other run's pid)."""
    lock_folder(run_dir, "--out (train.out / train.name)")
    return run_dir


def _record_inputs(config: Config, inputs: TrainInputs, trainer, resumed: bool) -> None:
    """Into the new run folder: the resolved config and the preflight; with a pool, its frames (unlabeled.txt,
    which the trainer then reads) and unlabeled.json."""
    run_dir = Path(trainer.save_dir)
    if not resumed:
        save_config(config, run_dir / RUN_CONFIG)
        write_preflight_report(inputs.info, run_dir / PREFLIGHT, config.train.max_bad_fraction)
    if inputs.pool is not None:
        d = config.distill
        settings = {"ratio": d.unlabeled_ratio, "weight": d.unlabeled_weight}
        trainer.use_pool(write_run_files(inputs.pool, run_dir, settings))


def _pool_taught(trainer, run_dir: Path) -> dict[str, Any] | None:
    """What the pool gave the run, added to its unlabeled.json (validation and the model card read it there)."""
    sampler = trainer.pool_sampler
    if sampler is None:
        return None
    epochs = trainer.epoch + 1
    return update_run_report(
        run_dir,
        per_epoch=sampler.per_epoch,
        epochs_completed=epochs,
        frames_drawn=sampler.per_epoch * epochs,  # over all ranks
        distinct_frames_seen=sampler.distinct_frames_seen(epochs),
    )


def _trainer(
    config: Config, inputs: TrainInputs, last_ckpt: Path | None, callbacks: dict[str, list] | None, finetune: bool
):
    """The DistillationTrainer for this config (continuing ``last_ckpt`` when resuming), with extra callbacks and
    the teacher ``check_inputs`` loaded (DDP workers load it again, from the same checked file)."""
    from .trainer import DistillationTrainer, KDRun

    t, info, full = config.train, inputs.info, inputs.full_unpickling
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
        teacher_modules=list(t.teacher_modules),
        finetune=finetune,
    )
    overrides = _ultralytics_overrides(config)
    if last_ckpt is not None:
        overrides = {
            "resume": str(last_ckpt),
            "save_dir": str(last_ckpt.parent.parent),  # a stripped checkpoint no longer records its folder
            "device": overrides["device"],
            "workers": overrides["workers"],
        }
    trainer = DistillationTrainer(overrides=overrides, kd=kd, teacher=inputs.teacher_model)
    for event, fns in (callbacks or {}).items():
        for fn in fns:
            trainer.add_callback(event, fn)
    return trainer


def _run(trainer, run_dir: Path, resumed: bool) -> None:
    from ..seam import finished_but_not_finalised

    try:
        trainer.train()
    except AssertionError as e:
        if not (resumed and finished_but_not_finalised(e)):
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


def _validate_against_teacher(config: Config, best: str, out: Path, inputs: TrainInputs):
    from ..validate import validate_from_config

    return validate_from_config(config, out, student=best, info=inputs.info, teacher=inputs.teacher)
