"""The `validate` stage: the student measured against its teacher on the same split, with gates.

Both models go through ultralytics' own validator with identical settings (metrics.py). Beside accuracy it reports
cost (parameters, GFLOPs, file size, batch-1 latency), retention (student / teacher for every accuracy figure),
teacher agreement (the student's mAP50 when the teacher's own confident predictions are the ground truth), the
operating point the cameras get, and the camera figures at it (camera_figures.py); gates.py judges them and
report.py writes validation.md and validation.png beside validation.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..config import Config, ValidateSettings
from ..data import DatasetInfo, dataset_folders, mirror, preflight, teacher_classes
from ..edge.sequences import load_sequences
from ..errors import InputError
from ..guard import refuse_overwriting_inputs
from ..layout import VALIDATION_JSON, VALIDATION_MD, VALIDATION_PNG
from ..pool import run_report
from ..reports import package_versions, write_json
from ..ultralytics_env import prepare_ultralytics
from ..weights import CheckedWeights, check_weights, load_modules, load_yolo, model_class_names, sha256_file
from . import camera_figures, metrics, report
from .gates import gates
from .result import ACCURACY, ValidationResult, ratio


def validate_from_config(
    config: Config,
    out: str | Path,
    student: str | CheckedWeights | None = None,
    info: DatasetInfo | None = None,
    teacher: CheckedWeights | None = None,
) -> ValidationResult:
    """`validate` with everything taken from ``config``: the student (``train.student`` unless given: a .pt, or one
    already checked), the teacher and the data must be set. ``info`` and ``teacher``: the preflight of the data and
    the checked teacher when the caller already has them (the build's), else they are made here."""
    t = config.train
    if t.teacher_modules:  # before anything is unpickled: the checkpoints may name their classes
        load_modules(t.teacher_modules)
    checked_student = student if isinstance(student, CheckedWeights) else None
    student = checked_student.path if checked_student else student or t.student
    missing = [flag for flag, value in (("--teacher", t.teacher), ("--data", t.data)) if not value]
    missing += [] if student.endswith(".pt") else ["--student (a .pt file)"]
    if missing:
        raise InputError(f"validate needs {', '.join(missing)}")
    split = config.validation.split
    if info is None or split not in info.splits:
        info = preflight(t.data, splits=(split,), max_bad_fraction=t.max_bad_fraction)
    student_pin = t.student_sha256 if student == t.student else None
    checked_student = checked_student or check_weights(student, student_pin, "student", t.allow_unsafe_weights)
    checked_teacher = teacher or check_weights(t.teacher, t.teacher_sha256, "teacher", t.allow_unsafe_weights)
    return validate(
        checked_student,
        checked_teacher,
        t.data,
        config.validation,
        out,
        imgsz=config.validation_imgsz,
        device=config.validation_device,
        info=info,
        class_map=config.distill.class_map,
    )


def validate(
    student: CheckedWeights,
    teacher: CheckedWeights,
    data: str,
    settings: ValidateSettings,
    out: str | Path,
    imgsz: int,
    device: str,
    info: DatasetInfo,
    class_map: dict[str, str] | None = None,
) -> ValidationResult:
    """Evaluate teacher and student on the same split; write validation.json/.md/.png into ``out``.

    ``info``: the preflight of ``data``; it must cover ``settings.split``. The teacher answers for the dataset's
    classes (by name, ``class_map`` where they differ), so both are scored on the same classes."""
    prepare_ultralytics()
    if settings.split not in info.splits:
        raise InputError(f"{data}: the preflight did not check the {settings.split} split that validation scores")
    if not info.splits[settings.split].labelled_images:
        raise InputError(
            f"{data}: the {settings.split} split has no labelled image, so there is nothing to score student and "
            f"teacher on; label some of its images, or choose another validation.split"
        )
    negatives = camera_figures.negative_frames(settings.negatives)  # a bad folder: exit 2 before any work
    sequences = load_sequences(settings.sequences) if settings.sequences else None  # likewise
    yolos = {"student": load_yolo(student), "teacher": load_yolo(teacher)}  # each file unpickled once
    mapped = teacher_classes(model_class_names(yolos["teacher"].model), info.names, class_map or {}, teacher.path, data)
    from ..seam import answering_for

    yolos["teacher"].model = answering_for(yolos["teacher"].model, mapped)
    student_names = model_class_names(yolos["student"].model)
    if student_names != info.names:
        raise InputError(
            f"class names differ: student {student.path} has {student_names}, dataset {data} has {info.names} "
            "(validate a student trained on this dataset)"
        )
    out = Path(out)
    owned = [out / VALIDATION_JSON, out / VALIDATION_MD, out / VALIDATION_PNG]
    given = [student.path, teacher.path, data, settings.negatives]
    refuse_overwriting_inputs(owned, given, "--out", datasets=dataset_folders(data))
    out.mkdir(parents=True, exist_ok=True)
    checked = {"student": student, "teacher": teacher}
    result = _evaluate(yolos, checked, data, settings, out, imgsz, device, info, negatives, sequences)
    result.teacher_classes = None if mapped.identical else mapped.to_dict()
    result.unlabeled = run_report(student.path)  # RUN/unlabeled.json beside the student's weights, if it had a pool
    write_json(out / VALIDATION_JSON, result.to_dict())
    report.write(result, out, data, settings, imgsz)
    return result


def _evaluate(
    yolos, checked, data: str, settings: ValidateSettings, out: Path, imgsz: int, device: str, info, negatives,
    sequences,
):  # fmt: skip
    from ultralytics.utils.torch_utils import select_device

    torch_device = select_device(device or "", verbose=False)
    with tempfile.TemporaryDirectory(prefix="wildfire-kd-validate-") as tmp:
        work = Path(tmp)
        mirrored = str(mirror(data, work / "dataset", info))  # ultralytics writes caches beside labels
        figures, boxes = {}, {}
        for role in ("teacher", "student"):
            model = yolos[role].model
            size = metrics.cost(model, imgsz)  # before the validator fuses the model in place
            scores = metrics.accuracy(yolos[role], mirrored, settings, imgsz, device, work, role)
            figures[role] = metrics.figures(
                checked[role], model, scores, info.names, settings, imgsz, torch_device, size
            )
            boxes[role] = scores.box
        args = (mirrored, settings, imgsz, device, work)
        agreement = metrics.teacher_agreement(yolos["student"].model, yolos["teacher"].model, *args)
        point = metrics.operating_point(boxes["student"], boxes["teacher"], settings)
        camera = camera_figures.both_models(yolos, info, settings, imgsz, device, point, negatives)
    extra = _camera_path_figures(yolos, info, settings, imgsz, device, camera["conf"], sequences)
    t, s = figures["teacher"], figures["student"]
    retention = {k: ratio(getattr(s, k), getattr(t, k)) for k in ACCURACY}
    checked_gates = gates(settings, s, retention, agreement, camera, **extra)
    return ValidationResult(
        out_dir=str(out),
        passed=all(g.passed for g in checked_gates),
        classes=info.names,
        teacher=t,
        student=s,
        retention=retention,
        teacher_agreement=agreement,
        gates=checked_gates,
        operating_point=point,
        camera_figures=camera,
        data={
            "yaml": str(Path(data).resolve()),
            "sha256": sha256_file(data),
            "split": settings.split,
            "images": info.splits[settings.split].images,
        },
        settings={**settings.model_dump(), "imgsz": imgsz, "device": str(torch_device)},
        versions=package_versions(),
        teacher_agreement_undefined=None
        if agreement is not None
        else f"the teacher predicts nothing at confidence >= {settings.agreement_conf} on this split",
        **extra,
    )


def _camera_path_figures(
    yolos, info, settings: ValidateSettings, imgsz: int, device: str, conf: float, sequences: list | None
) -> dict:
    """Robustness to what camera pipelines do to frames, and the camera ``sequences`` (when configured)."""
    from .robustness import robustness
    from .sequences import sequence_section

    extra: dict = {"robustness": None, "sequences": None}
    if settings.robustness:
        extra["robustness"] = robustness(yolos, info, settings.split, conf, imgsz, device)
    if sequences is not None:
        models = {role: yolos[role].model for role in ("student", "teacher")}
        extra["sequences"] = sequence_section(models, sequences, settings, imgsz, conf)
    return extra
