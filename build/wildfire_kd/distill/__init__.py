"""The `train` stage: check inputs, then distil the teacher into the student with DistillationTrainer."""

from __future__ import annotations

import difflib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, load_config, save_config
from ..data import check_class_names, preflight
from ..errors import InputError
from ..reports import write_json
from ..runtime import prepare_ultralytics
from ..weights import load_detection_model, model_class_names, verify_file

CONFIG_NAME = "wildfire_kd_config.yaml"
REPORT_NAME = "train.json"

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


def check_inputs(config: Config) -> None:
    """Everything that can be checked before training starts: exit 2 now rather than an hour in."""
    t, d = config.train, config.distill
    if not t.data:
        raise InputError("no dataset: pass --data path/to/data.yaml (or set train.data)")
    info = preflight(t.data)
    needs_teacher = d.response or d.feature_distillation
    if needs_teacher:
        if not t.teacher:
            raise InputError(
                "no teacher: pass --teacher path/to/teacher.pt (or set distill.response=false for plain training)"
            )
        teacher = load_detection_model(t.teacher, t.teacher_sha256, role="teacher")
        check_class_names(model_class_names(teacher), info.names, t.teacher, t.data)
        del teacher
    if t.student.endswith(".pt"):
        verify_file(t.student, t.student_sha256, role="student")
    elif not t.student.endswith((".yaml", ".yml")):
        raise InputError(
            f"train.student={t.student!r}: expected a .pt checkpoint or a model .yaml such as yolov8n.yaml"
        )


def _resume_config(resume: str, config: Config) -> tuple[Config, Path]:
    path = Path(resume)
    last = path / "weights" / "last.pt" if path.is_dir() else path
    if not last.is_file():
        raise InputError(f"--resume {resume}: no checkpoint at {last} (pass a run folder or its weights/last.pt)")
    run_dir = last.parent.parent
    saved = run_dir / CONFIG_NAME
    if not saved.is_file():
        raise InputError(f"--resume {resume}: {saved} is missing, so the run's teacher and KD settings are unknown")
    resumed = load_config(saved)
    # hardware-only settings may change on resume; everything that shapes the model comes from the run
    resumed.train.device = config.train.device
    resumed.train.workers = config.train.workers
    return resumed, last


def train(config: Config, resume: str | None = None, callbacks: dict[str, list] | None = None) -> TrainResult:
    """Distil ``config.train.teacher`` into ``config.train.student``; returns where everything was written."""
    prepare_ultralytics()
    last_ckpt = None
    if resume:
        config, last_ckpt = _resume_config(resume, config)
    check_inputs(config)

    from .trainer import DistillationTrainer, KDRun

    kd = KDRun(
        teacher=str(Path(config.train.teacher).resolve()) if config.train.teacher else None,
        teacher_sha256=config.train.teacher_sha256,
        distill=config.distill.model_dump(),
        grad_clip=config.train.grad_clip,
        max_consecutive_skipped=config.train.max_consecutive_skipped,
    )
    overrides = _ultralytics_overrides(config)
    if last_ckpt is not None:
        overrides = {"resume": str(last_ckpt), "device": overrides["device"], "workers": overrides["workers"]}
    trainer = DistillationTrainer(overrides=overrides, kd=kd)
    for event, fns in (callbacks or {}).items():
        for fn in fns:
            trainer.add_callback(event, fn)
    run_dir = Path(trainer.save_dir)
    if last_ckpt is None:
        save_config(config, run_dir / CONFIG_NAME)

    start = time.time()
    trainer.train()
    result = TrainResult(
        run_dir=str(run_dir),
        best=str(trainer.best) if trainer.best.exists() else None,
        last=str(trainer.last) if trainer.last.exists() else None,
        results_csv=str(trainer.csv),
        batch_log=str(run_dir / "batch_log.jsonl"),
        epochs_completed=trainer.epoch + 1,
        skipped_steps=trainer.skipped_steps,
        seconds=round(time.time() - start, 2),
        final_metrics={k: float(v) for k, v in (trainer.metrics or {}).items()},
        config_sha256=config.digest(),
    )
    if config.validation.after_train and config.train.teacher and result.best:
        result.validation = _validate_against_teacher(config, result.best, run_dir / "validation")
    write_json(run_dir / REPORT_NAME, result.to_dict())
    return result


def _validate_against_teacher(config: Config, best: str, out: Path) -> dict[str, Any]:
    from ..validate import JSON_NAME, validate

    t, v = config.train, config.validation
    report = validate(
        best, t.teacher, t.data, v, out, imgsz=v.imgsz or t.imgsz, device=t.device if v.device is None else v.device,
        teacher_sha256=t.teacher_sha256,
    )  # fmt: skip
    return {
        "passed": report.passed,
        "report": str(out / JSON_NAME),
        "failed_gates": [g.describe() for g in report.failed_gates],
        "map50_retention": report.retention["map50"],
        "teacher_agreement": report.teacher_agreement,
    }
