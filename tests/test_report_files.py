"""Reports read back as objects: train.json and validation.json of this version and of earlier ones."""

from __future__ import annotations

import json

import pytest

from conftest import MODEL_FIGURES as FIGURES
from wildfire_kd.distill import TrainResult
from wildfire_kd.errors import InputError
from wildfire_kd.validate import ValidationResult


def test_an_older_train_json_with_other_fields_loads(tmp_path):
    """A run finished by another version: extra fields are ignored and missing ones default (was a TypeError, exit 3,
    on resume and in the demo's reuse of its teacher)."""
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"run_dir": "r", "best": "r/weights/best.pt", "gone_field": 1, "epochs_completed": 4}))
    result = TrainResult.load(path)
    assert (result.run_dir, result.best, result.epochs_completed, result.skipped_steps) == (
        "r",
        "r/weights/best.pt",
        4,
        0,
    )
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="not a training report"):
        TrainResult.load(path)


def test_a_validation_json_reads_back_as_the_result_it_was_written_from(tmp_path):
    report = {
        "out_dir": "v", "passed": True, "classes": ["smoke"], "teacher": FIGURES, "student": {**FIGURES, "map50": 0.7},
        "retention": {"map50": 0.7 / 0.75}, "teacher_agreement": 0.9,
        "gates": [{"name": "validation.min_map50_retention", "value": 0.93, "threshold": 0.9, "comparison": ">=",
                   "passed": True}],
        "operating_point": {"conf": 0.3, "rule": "max_f1"}, "field": {"conf": 0.3}, "data": {"split": "val"},
        "settings": {"device": "cpu"}, "versions": {}, "a_later_field": 1,
    }  # fmt: skip
    path = tmp_path / "validation.json"
    path.write_text(json.dumps(report))
    result = ValidationResult.load(path)
    assert result.student.map50 == 0.7 and result.gates[0].describe() == (
        "validation.min_map50_retention = 0.93, required >= 0.9"
    )
    assert result.camera_figures == {"conf": 0.3}, "the key's earlier name ('field') still reads"
    assert result.shipped_operating_point == {"conf": 0.3, "rule": "max_f1"}
    assert result.summary()["student"]["map50"] == 0.7
    assert json.loads(json.dumps(result.to_dict()))["camera_figures"] == {"conf": 0.3}
    del report["teacher"]
    path.write_text(json.dumps(report))
    with pytest.raises(InputError, match="not a validation report"):
        ValidationResult.load(path)
