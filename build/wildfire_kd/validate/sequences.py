"""Both models over camera sequences through the camera path, and the camera profile and alarm rule chosen on them.

Each model is exported to a temporary fp32 ONNX file at each profile's input size and opened with `CameraModel`, the
runtime that ships; its frames go through the camera's mask, static suppression, the alarm rule and the events
(edge/camera.py, edge/sequence_figures.py). For each camera profile (validation.camera_profiles: input size, tiles)
the rule is chosen on the student's detections (the most fire sequences found within validation.sequence_budget
false alarms per camera-day); the profile that finds the most fires within the budget, then the earliest, then the
cheapest per frame (network input pixels) wins, and ships in the model file with its rule. The teacher is judged
under the same profile and rule; with masks, the student also without them: what the masks remove.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import CameraProfileSetting, ValidateSettings
from ..edge.boxes import DEFAULT_IOU
from ..edge.camera import CameraSettings
from ..edge.model import CameraProfile, tile_grid
from ..edge.sequence_figures import choose_rule, detections_of, figures
from ..edge.sequences import Sequence


def _summary(f) -> dict[str, Any]:
    keep = ("recall", "precision", "f1", "false_positive_rate", "median_minutes_to_detection", "alerts_per_fire")
    return {k: getattr(f, k) for k in (*keep, "false_alarms_per_camera_day", "false_alarms", "suppressed")}


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


def input_megapixels(camera, sequences: list[Sequence], tiles: int | str) -> float:
    """Network input pixels per frame (millions), the whole frame and its tiles: a profile's cost, the same on any
    machine (from each sequence's first frame)."""
    import cv2

    costs = []
    for s in sequences:
        image = cv2.imread(str(s.frames[0].path))
        if image is not None:
            h, w = image.shape[:2]
            n, _ = camera.tiles_for(w, h, tiles)
            costs.append((1 + (len(tile_grid(w, h, n)) if n > 1 else 0)) * camera.imgsz**2 / 1e6)
    return statistics.fmean(costs) if costs else 0.0


class _Trial:
    """One camera profile tried on the sequences with the student."""

    def __init__(self, setting: CameraProfileSetting, imgsz: int, camera, sequences, settings, floor: float):
        self.profile = CameraProfile(imgsz, setting.tiles)
        start = time.perf_counter()
        args = (sequences, floor, DEFAULT_IOU, setting.tiles)
        self.found = detections_of(camera, *args, masks=settings.sequence_masks)
        self.ms_per_frame = 1000 * (time.perf_counter() - start) / max(sum(len(s.frames) for s in sequences), 1)
        self.megapixels = input_megapixels(camera, sequences, setting.tiles)
        self.rule, self.figures = choose_rule(sequences, self.found, settings.sequence_budget, floor, CameraSettings())

    def key(self, budget: float):
        f = self.figures
        fa = f.false_alarms_per_camera_day or 0.0
        delay = f.median_minutes_to_detection if f.median_minutes_to_detection is not None else float("inf")
        return (fa > budget, fa if fa > budget else 0.0, -(f.recall or 0.0), delay, self.megapixels)

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile.to_dict(), "profile_text": self.profile.describe(), "rule": self.rule.to_dict(),
                "rule_text": self.rule.describe(), "input_megapixels_per_frame": round(self.megapixels, 3),
                "ms_per_frame": round(self.ms_per_frame, 1), **_summary(self.figures)}  # fmt: skip


def sequence_section(
    models: dict[str, Any], sequences: list[Sequence], settings: ValidateSettings, imgsz: int, conf: float
) -> dict[str, Any]:
    """validation.json's ``sequences``: each camera profile tried, the one chosen with its rule, each model's figures
    under both, per sequence."""
    from ..edge.model import CameraModel

    floor = min(settings.sequence_floor, conf)
    with tempfile.TemporaryDirectory(prefix="wildfire-kd-sequences-") as tmp:
        opened: dict[tuple[str, int], Any] = {}

        def camera(role: str, size: int):
            if (role, size) not in opened:
                opened[role, size] = CameraModel(camera_onnx(models[role], size, Path(tmp) / f"{role}-{size}.onnx"))
            return opened[role, size]

        trials = [_Trial(p, p.imgsz or imgsz, camera("student", p.imgsz or imgsz), sequences, settings, floor)
                  for p in settings.camera_profiles]  # fmt: skip
        best = min(trials, key=lambda t: t.key(settings.sequence_budget))
        teacher = detections_of(
            camera("teacher", best.profile.imgsz), sequences, floor, DEFAULT_IOU, best.profile.tiles
        )
        unmasked = None
        if settings.sequence_masks:
            args = (sequences, floor, DEFAULT_IOU, best.profile.tiles)
            unmasked = detections_of(camera("student", best.profile.imgsz), *args, masks=False)
    rule, student = best.rule, best.figures
    unreadable = [
        str(f.path) for q in sequences for f, d in zip(q.frames, best.found[q.name], strict=True) if d is None
    ]
    section = {
        "folder": str(Path(settings.sequences).resolve()),
        "profile": best.profile.to_dict(),
        "profile_text": best.profile.describe(),
        "profiles": [t.to_dict() for t in trials],
        "rule": rule.to_dict(),
        "rule_text": rule.describe(),
        "camera": CameraSettings(rule).to_dict(),
        "budget_per_camera_day": settings.sequence_budget,
        "within_budget": (student.false_alarms_per_camera_day or 0.0) <= settings.sequence_budget,
        "student": student.to_dict(),
        "teacher": figures(sequences, teacher, rule).to_dict(),
        "unreadable_frames": unreadable,  # listed frames no decoder could read: left out of every figure
    }
    if unmasked is not None:
        section["student_without_masks"] = _summary(figures(sequences, unmasked, rule))
    return section
