"""What `validate` found, as one object: written as validation.json, and read back by whoever needs it
(``ValidationResult.load``: the export's run context, the train summary, the model card), never by string keys."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError

ACCURACY = ("precision", "recall", "map50", "map50_95")
LABELS = {"precision": "P", "recall": "R", "map50": "mAP50", "map50_95": "mAP50-95"}


def ratio(student: float | None, teacher: float | None) -> float | None:
    """student / teacher (retention); None when either is undefined or the teacher scores 0."""
    return student / teacher if student is not None and teacher is not None and teacher > 0 else None


def worst_retention(robustness: dict[str, Any] | None, role: str) -> float | None:
    """``role``'s lowest recall retention over the perturbations of a robustness section (robustness.py): a retention
    of 0 (all recall lost) counts, an undefined one (no clean recall to keep) does not; None without any."""
    kept = [r[role]["retention"] for r in (robustness or {}).get("perturbed", {}).values()]
    kept = [k for k in kept if k is not None]
    return min(kept) if kept else None


@dataclass
class ModelFigures:
    weights: str
    sha256: str
    size_mb: float
    parameters: int
    gflops: float
    latency_ms: float  # median batch-1 forward, fused model
    latency_p90_ms: float
    precision: float
    recall: float
    map50: float
    map50_95: float
    per_class: dict[str, dict[str, float | int | None]] = field(default_factory=dict)

    def accuracy(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ACCURACY}


@dataclass
class Gate:
    name: str
    value: float | None
    threshold: float
    comparison: str  # ">=" or "<="
    passed: bool

    def describe(self) -> str:
        shown = "undefined" if self.value is None else f"{self.value:.4g}"
        return f"{self.name} = {shown}, required {self.comparison} {self.threshold:g}"


@dataclass
class ValidationResult:
    out_dir: str
    passed: bool
    classes: list[str]
    teacher: ModelFigures
    student: ModelFigures
    retention: dict[str, float | None]
    teacher_agreement: float | None  # None: the teacher predicts nothing at agreement_conf, so it is undefined
    gates: list[Gate]
    operating_point: dict[str, Any] | None = None  # the student's confidence threshold for the cameras
    camera_figures: dict[str, Any] | None = (
        None  # false alarms and recall by size at that threshold (camera_figures.py)
    )
    data: dict[str, Any] = field(default_factory=dict)  # the data.yaml, its sha256, the split and its image count
    settings: dict[str, Any] = field(default_factory=dict)  # validation.* as run, with imgsz and device
    versions: dict[str, Any] = field(default_factory=dict)
    teacher_agreement_undefined: str | None = None  # why, when teacher_agreement is None
    teacher_classes: dict[str, Any] | None = None  # a teacher of other classes: which of them answered for the data's
    robustness: dict[str, Any] | None = None  # recall under JPEG, rescaling, brightness and contrast (robustness.py)
    sequences: dict[str, Any] | None = None  # camera sequences: the alarm rule and both models under it (sequences.py)
    unlabeled: dict[str, Any] | None = None  # the student's run learnt from unlabelled frames: how many, from where

    @property
    def alarm_rule(self) -> dict[str, Any] | None:
        """The alarm rule chosen on camera sequences, when there were any: it ships in the model file."""
        return (self.sequences or {}).get("rule")

    @property
    def camera_profile(self) -> dict[str, Any] | None:
        """The camera profile (input size, tiles) chosen on camera sequences, when there were any: it ships too."""
        return (self.sequences or {}).get("profile")

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    @property
    def shipped_operating_point(self) -> dict[str, Any] | None:
        """The operating point when there is one to ship (a confidence), else None."""
        point = self.operating_point
        return point if point and point.get("conf") is not None else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The figures a tracker keeps: pass/fail, both models' accuracy and latency, retention, agreement, gates."""
        keep = ("precision", "recall", "map50", "map50_95", "latency_ms")
        return {
            "passed": self.passed,
            "student": {k: getattr(self.student, k) for k in keep},
            "teacher": {k: getattr(self.teacher, k) for k in keep},
            "retention": self.retention,
            "teacher_agreement": self.teacher_agreement,
            "gates": {g.name: "passed" if g.passed else "failed" for g in self.gates},
        }

    @classmethod
    def load(cls, path: str | Path) -> ValidationResult:
        """A validation.json written by `validate` (this version's or an earlier one's)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable validation report ({e}); run `wildfire-kd validate` again") from e
        raw.setdefault("camera_figures", raw.pop("field", None))  # the key's name before this version
        try:
            known = {f.name for f in fields(cls)}
            values = {k: v for k, v in raw.items() if k in known}
            values["teacher"], values["student"] = (_model_figures(raw[role]) for role in ("teacher", "student"))
            values["gates"] = [Gate(**g) for g in raw["gates"]]
            return cls(**values)
        except (KeyError, TypeError) as e:
            raise InputError(f"{path}: not a validation report of wildfire-kd ({type(e).__name__}: {e})") from e


def _model_figures(raw: dict[str, Any]) -> ModelFigures:
    known = {f.name for f in fields(ModelFigures)}
    return ModelFigures(**{k: v for k, v in raw.items() if k in known})
