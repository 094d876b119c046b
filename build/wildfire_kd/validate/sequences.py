"""Both models over camera sequences through the camera path, and the alarm rule chosen on them.

Each model is exported to a temporary fp32 ONNX file and opened with `CameraModel`, the runtime that ships; its frames
go through the camera's mask and the alarm logic (edge/sequence_figures.py). The rule is chosen on the student's
detections (the most fire sequences found within validation.sequence_budget false alarms per camera-day) and the
teacher is judged under the same rule. With masks, the student is also judged without them: what the masks remove.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

from ..config import ValidateSettings
from ..edge.boxes import DEFAULT_IOU
from ..edge.sequence_figures import choose_rule, detections_of, figures
from ..edge.sequences import Sequence


def _summary(f) -> dict[str, Any]:
    keep = ("recall", "precision", "f1", "false_positive_rate", "median_minutes_to_detection")
    return {k: getattr(f, k) for k in (*keep, "false_alarms_per_camera_day", "false_alarms")}


def camera_onnx(model, imgsz: int, out: Path) -> Path:
    """``model`` (a loaded DetectionModel, as validation holds it) as an fp32 ONNX file with the camera's metadata."""
    import torch

    from ..config import ExportSettings
    from ..edge.letterbox import INPUT_CONTRACT
    from ..edge.metadata import write_onnx
    from ..onnx_files import save_checked, traced_graph
    from ..weights import model_class_names

    staged = out.with_suffix(".pt")
    torch.save({"model": copy.deepcopy(model).half(), "train_args": {"imgsz": imgsz}}, staged)
    graph = traced_graph(staged, ExportSettings(), imgsz, full_unpickling=True)  # our own file, written just now
    names = model_class_names(model)
    write_onnx(graph, {"names": names, "imgsz": [imgsz, imgsz], "input": INPUT_CONTRACT, "variant": "fp32"})
    save_checked(graph, out)
    return out


def sequence_section(
    models: dict[str, Any], sequences: list[Sequence], settings: ValidateSettings, imgsz: int, conf: float
) -> dict[str, Any]:
    """validation.json's ``sequences``: the rule chosen on ``sequences`` (settings.sequences, loaded), each model's
    figures under it, per sequence."""
    from ..edge.model import CameraModel

    floor = min(settings.sequence_floor, conf)
    found, unmasked = {}, None
    with tempfile.TemporaryDirectory(prefix="wildfire-kd-sequences-") as tmp:
        for role, model in models.items():
            camera = CameraModel(camera_onnx(model, imgsz, Path(tmp) / f"{role}.onnx"))
            args = (sequences, floor, DEFAULT_IOU, settings.sequence_tiles)
            found[role] = detections_of(camera, *args, masks=settings.sequence_masks)
            if role == "student" and settings.sequence_masks:
                unmasked = detections_of(camera, *args, masks=False)
    rule, student = choose_rule(sequences, found["student"], settings.sequence_budget, floor)
    section = {
        "folder": str(Path(settings.sequences).resolve()),
        "rule": rule.to_dict(),
        "rule_text": rule.describe(),
        "budget_per_camera_day": settings.sequence_budget,
        "within_budget": (student.false_alarms_per_camera_day or 0.0) <= settings.sequence_budget,
        "student": student.to_dict(),
        "teacher": figures(sequences, found["teacher"], rule).to_dict(),
    }
    if unmasked is not None:
        section["student_without_masks"] = _summary(figures(sequences, unmasked, rule))
    return section
