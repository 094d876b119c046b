"""The gates of `validate`: each configured threshold against its figure; a failed gate makes the exit code 1."""

from __future__ import annotations

from typing import Any

from ..config import ValidateSettings
from .result import Gate, ModelFigures


def gates(
    settings: ValidateSettings,
    student: ModelFigures,
    retention: dict[str, float | None],
    agreement: float | None,
    camera: dict[str, Any] | None = None,
    robustness: dict[str, Any] | None = None,
    sequences: dict[str, Any] | None = None,
) -> list[Gate]:
    """One Gate per configured threshold (``validation.min_*`` / ``max_*``), in the order of the config."""
    camera, student_sequences = camera or {}, (sequences or {}).get("student") or {}
    checks = [
        ("min_map50_retention", retention["map50"], settings.min_map50_retention, ">="),
        ("min_map50", student.map50, settings.min_map50, ">="),
        ("min_map50_95", student.map50_95, settings.min_map50_95, ">="),
        ("min_teacher_agreement", agreement, settings.min_teacher_agreement, ">="),
        ("max_latency_ms", student.latency_ms, settings.max_latency_ms, "<="),
        (
            "max_false_alarms_per_1000",
            (camera.get("student") or {}).get("false_alarms_per_1000"),
            settings.max_false_alarms_per_1000,
            "<=",
        ),
        (
            "min_small_recall_retention",
            (camera.get("recall_retention") or {}).get("small"),
            settings.min_small_recall_retention,
            ">=",
        ),
        (
            "max_minutes_to_detection",
            student_sequences.get("median_minutes_to_detection"),
            settings.max_minutes_to_detection,
            "<=",
        ),
        (
            "max_false_alarms_per_camera_day",
            student_sequences.get("false_alarms_per_camera_day"),
            settings.max_false_alarms_per_camera_day,
            "<=",
        ),
        ("min_sequence_recall", student_sequences.get("recall"), settings.min_sequence_recall, ">="),
        (
            "min_robust_recall_retention",
            (robustness or {}).get("worst_student_retention"),
            settings.min_robust_recall_retention,
            ">=",
        ),
    ]
    return [
        judge(f"validation.{name}", value, threshold, op)
        for name, value, threshold, op in checks
        if threshold is not None
    ]


def judge(name: str, value: float | None, threshold: float, comparison: str) -> Gate:
    """``value`` against ``threshold``; an undefined value fails its gate."""
    ok = value is not None and (value >= threshold if comparison == ">=" else value <= threshold)
    return Gate(name, value, threshold, comparison, ok)
