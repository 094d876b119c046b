"""False alarms and recall by size (camera_metrics.py) on hand-made boxes."""

from __future__ import annotations

import pytest

from wildfire_kd.edge.figures import camera_figures, size_bucket

SMALL, LARGE = 0.0025, 0.0225


def test_a_model_that_fires_on_every_frame_raises_one_false_alarm_per_smoke_free_frame():
    negatives = {f"neg{i}" for i in range(8)}
    always = {f: [(0, 0.1, 0.1, 0.3, 0.3), (1, 0.5, 0.5, 0.6, 0.6)] for f in negatives}  # two boxes: one alarm
    figures = camera_figures(always, {}, negatives, conf=0.3, small=SMALL, large=LARGE)
    assert figures.false_alarm_frames == 8 and figures.false_alarms_per_1000 == 1000.0
    some = {f: always[f] if f in {"neg0", "neg3", "neg5"} else [] for f in negatives}
    assert camera_figures(some, {}, negatives, 0.3, SMALL, LARGE).false_alarms_per_1000 == pytest.approx(375.0)
    assert camera_figures({}, {}, set(), 0.3, SMALL, LARGE).false_alarms_per_1000 is None  # nothing to judge


def test_recall_by_size_counts_each_bucket_with_class_and_overlap():
    small = (0, 0.50, 0.50, 0.54, 0.54)  # 0.0016 of the image
    medium = (0, 0.10, 0.10, 0.20, 0.20)  # 0.01
    large = (1, 0.40, 0.40, 0.80, 0.80)  # 0.16
    assert [size_bucket(b, SMALL, LARGE) for b in (small, medium, large)] == ["small", "medium", "large"]
    truths = {"a": [small, medium], "b": [large, (0, 0.0, 0.0, 0.02, 0.02)]}
    predictions = {
        "a": [(0, 0.50, 0.50, 0.54, 0.545), (1, 0.10, 0.10, 0.20, 0.20)],  # small found; medium: wrong class
        "b": [(1, 0.42, 0.42, 0.80, 0.80), (0, 0.6, 0.6, 0.7, 0.7)],  # large found (IoU 0.9); tiny one missed
    }
    f = camera_figures(predictions, truths, set(), conf=0.3, small=SMALL, large=LARGE)
    assert f.recall_by_size == {
        "small": {"objects": 2, "found": 1, "recall": 0.5},
        "medium": {"objects": 1, "found": 0, "recall": 0.0},
        "large": {"objects": 1, "found": 1, "recall": 1.0},
    }
    off_by_half = {"b": [(1, 0.60, 0.60, 1.00, 1.00)]}  # IoU 0.14 with the large box: not found
    assert camera_figures(off_by_half, truths, set(), 0.3, SMALL, LARGE).recall_by_size["large"]["found"] == 0
