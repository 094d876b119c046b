"""The `finetune` stage: the teacher finetuned on the dataset before it teaches (build's optional first stage).

Most users hold a general smoke/fire detector, not one trained on their cameras' images; a teacher that does poorly
on the data teaches the student its mistakes. The teacher is trained as it is (custom blocks and all, through
train.teacher_modules; upstream would rebuild it from its yaml), answering for the dataset's classes by name, with
train's preflight, pins, offline guards and resume (`distill.stage.train` with ``finetune=True``). Before and after,
ultralytics' validator scores it on the val split: RUN/finetune.json.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import Config
from .data import DatasetInfo, mirror, preflight, teacher_classes
from .errors import InputError
from .layout import FINETUNE_REPORT
from .reports import write_json
from .validate.result import ACCURACY
from .weights import CheckedWeights, check_weights, load_modules, load_yolo, model_class_names, sha256_file


@dataclass
class FinetuneResult:
    run_dir: str
    best: str | None  # the finetuned teacher
    before: dict[str, float]  # the teacher as given, on the dataset's classes: precision, recall, mAP50, mAP50-95
    after: dict[str, float]  # the finetuned teacher, same split and settings
    epochs_completed: int
    seconds: float
    teacher_classes: dict[str, Any] | None = None  # a teacher of other classes: which answered for the data's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_config(config: Config) -> Config:
    """The config of the finetuning run: the teacher as the model trained (its pin as the model's), the
    finetune.* settings in place of train's, no distillation (no unlabelled pool), no after-train comparison."""
    c = config.model_copy(deep=True)
    t, f = c.train, c.finetune
    t.student, t.student_sha256, t.teacher, t.teacher_sha256 = t.teacher, t.teacher_sha256, None, None
    t.epochs, t.lr0, t.optimizer, t.patience, t.freeze, t.name = (
        f.epochs,
        f.lr0,
        f.optimizer,
        f.patience,
        f.freeze,
        f.name,
    )
    t.batch, t.imgsz = f.batch or t.batch, f.imgsz or t.imgsz
    c.distill.response = c.distill.feature_distillation = False
    t.unlabeled = []  # the teacher learns from the labels alone; the pool teaches the student
    c.validation.after_train = False
    return c


def finetune(
    config: Config,
    resume: str | None = None,
    force: bool = False,
    info: DatasetInfo | None = None,
    teacher: CheckedWeights | None = None,
) -> FinetuneResult:
    """Finetune ``config.train.teacher`` on ``config.train.data`` into ``train.out / finetune.name``; returns where
    the finetuned teacher is and how it scored before and after. ``info``, ``teacher``: the preflight and the checked
    teacher, when the caller has them (the build)."""
    from .distill.stage import train

    t = config.train
    if not t.data or not t.teacher:
        raise InputError("finetune needs a dataset and a teacher: pass --data and --teacher")
    if t.teacher_modules:
        load_modules(t.teacher_modules)
    info = info or preflight(t.data, max_bad_fraction=t.max_bad_fraction)
    teacher = teacher or check_weights(t.teacher, t.teacher_sha256, "teacher", t.allow_unsafe_weights)
    run = run_config(config)
    result = train(run, resume=resume, force=force, info=info, teacher=teacher, finetune=True)
    if not result.best:
        raise InputError(f"finetuning wrote no best.pt into {result.run_dir}")
    best = finetuned_teacher(result.best, teacher)
    before, after = _scores(config, run, info, teacher, best)
    outcome = FinetuneResult(
        result.run_dir, result.best, before, after, result.epochs_completed, result.seconds, result.teacher_classes
    )
    write_json(Path(result.run_dir) / FINETUNE_REPORT, outcome.to_dict())
    return outcome


def finetuned_teacher(best: str, given: CheckedWeights) -> CheckedWeights:
    """The finetuned teacher's best.pt, checked. It holds the given teacher's own classes (custom blocks), so it is
    allowed full unpickling where the given teacher was: by its own pin, its digest as we wrote it."""
    return check_weights(best, sha256_file(best) if given.full_unpickling else None, "teacher")


def _scores(config: Config, run: Config, info: DatasetInfo, teacher: CheckedWeights, best: CheckedWeights):
    """The teacher before (answering for the dataset's classes) and after, through ultralytics' validator."""
    from .seam import answering_for
    from .validate.metrics import accuracy

    scores = []
    with tempfile.TemporaryDirectory(prefix="wildfire-kd-finetune-") as tmp:
        data = str(mirror(config.train.data, Path(tmp) / "dataset", info))
        for role, checked in (("before", teacher), ("after", best)):
            yolo = load_yolo(checked)
            names = model_class_names(yolo.model)
            mapped = teacher_classes(names, info.names, config.distill.class_map, checked.path, config.train.data)
            yolo.model = answering_for(yolo.model, mapped)
            box = accuracy(
                yolo, data, config.validation, run.train.imgsz, config.validation_device, Path(tmp), role
            ).box
            scores.append(
                dict(zip(ACCURACY, (float(box.mp), float(box.mr), float(box.map50), float(box.map)), strict=True))
            )
    return scores[0], scores[1]
