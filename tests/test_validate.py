"""`wildfire-kd validate`: figures, retention, teacher agreement, gates and reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_teacher, opts, run_cli, sets

pytestmark = pytest.mark.slow

FAST = [
    "--imgsz",
    "128",
    "--device",
    "cpu",
    "--set",
    "validation.latency_runs=5",
    "--set",
    "validation.latency_warmup=1",
]


@pytest.fixture(scope="module")
def self_validation(learnt_model, learnt_data, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("selfval")
    r = run_cli(
        "validate",
        *opts(student=str(learnt_model), teacher=str(learnt_model), data=str(learnt_data), out=str(out)),
        *FAST,
    )
    return out, r


def test_model_against_itself_has_retention_one_and_full_agreement(self_validation):
    out, r = self_validation
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "validation.json").read_text())
    assert report["teacher"]["map50"] > 0.3, "the fixture model learnt something"
    assert report["retention"] == {"precision": 1.0, "recall": 1.0, "map50": 1.0, "map50_95": 1.0}
    assert report["teacher_agreement"] >= 0.99
    assert report["passed"] is True
    assert "✓ validation.min_map50_retention = 1, required >= 0.9" in r.stdout


def test_report_holds_every_figure_in_range(self_validation, learnt_model, learnt_data):
    out, _ = self_validation
    report = json.loads((out / "validation.json").read_text())
    for role in ("teacher", "student"):
        fig = report[role]
        for key in ("precision", "recall", "map50", "map50_95"):
            assert 0.0 <= fig[key] <= 1.0, (role, key)
        assert fig["parameters"] == 3_011_238  # yolov8n, 2 classes
        assert 0.1 < fig["gflops"] < 1.0  # 8.2 GFLOPs at 640 scales to ~0.33 at 128
        assert fig["latency_ms"] > 0 and fig["latency_p90_ms"] >= fig["latency_ms"]
        assert fig["size_mb"] == pytest.approx(learnt_model.stat().st_size / 2**20, abs=1e-3)
        assert len(fig["sha256"]) == 64
        assert set(fig["per_class"]) == {"smoke", "fire"}
        assert all(0 <= c["map50"] <= 1 and c["instances"] > 0 for c in fig["per_class"].values())
    assert len(report["data"]["sha256"]) == 64 and report["data"]["split"] == "val"
    assert report["settings"]["conf"] == 0.001 and report["settings"]["iou"] == 0.7
    assert report["versions"]["ultralytics"].startswith("8.4")
    assert [g["name"] for g in report["gates"]] == ["validation.min_map50_retention"]


def test_markdown_table_and_png_are_written(self_validation):
    out, _ = self_validation
    md = (out / "validation.md").read_text()
    assert "| metric | teacher | student | student / teacher |" in md
    assert "| mAP50 |" in md and "| smoke |" in md and "| fire |" in md and "**PASSED**" in md
    with Image.open(out / "validation.png") as png:
        assert png.format == "PNG" and png.size[0] > 500 and png.size[1] > 200


def test_impossible_gate_exits_1_naming_the_gate(learnt_model, learnt_data, tmp_path):
    r = run_cli(
        "validate",
        *opts(student=str(learnt_model), teacher=str(learnt_model), data=str(learnt_data), out=str(tmp_path)),
        *FAST,
        *sets("validation.min_map50_retention=1.5", "validation.max_latency_ms=0.0001"),
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert "validation.min_map50_retention = 1, required >= 1.5" in r.stderr
    assert "validation.max_latency_ms" in r.stderr
    report = json.loads((tmp_path / "validation.json").read_text())
    assert report["passed"] is False and not any(g["passed"] for g in report["gates"])
    assert "**FAILED**" in (tmp_path / "validation.md").read_text()


def test_untrained_student_fails_retention_against_learnt_teacher(learnt_model, learnt_data, tmp_path):
    student = make_teacher(tmp_path / "untrained.pt", ["smoke", "fire"], cfg="yolov8n.yaml")
    r = run_cli(
        "validate",
        *opts(student=str(student), teacher=str(learnt_model), data=str(learnt_data), out=str(tmp_path / "v")),
        *FAST,
    )
    assert r.returncode == 1
    report = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert report["retention"]["map50"] < 0.5 and report["teacher_agreement"] < 0.5


def test_class_name_disagreement_exits_2(learnt_model, learnt_data, tmp_path):
    teacher = make_teacher(tmp_path / "fs.pt", ["flame", "haze"], cfg="yolov8n.yaml")
    r = run_cli(
        "validate",
        *opts(student=str(learnt_model), teacher=str(teacher), data=str(learnt_data), out=str(tmp_path)),
        *FAST,
    )
    assert r.returncode == 2 and "['flame', 'haze']" in r.stderr and "Traceback" not in r.stderr


def test_missing_val_split_exits_2(learnt_model, learnt_data, tmp_path):
    data = tmp_path / "ds"
    shutil.copytree(learnt_data.parent, data)
    (data / "data.yaml").write_text("train: images/train\nnames: {0: smoke, 1: fire}\n")
    r = run_cli(
        "validate",
        *opts(
            student=str(learnt_model), teacher=str(learnt_model), data=str(data / "data.yaml"), out=str(tmp_path / "v")
        ),
        *FAST,
    )
    assert r.returncode == 2 and "no 'val:' split" in r.stderr and "Traceback" not in r.stderr


def test_agreement_with_a_teacher_that_predicts_nothing_is_undefined_not_zero(learnt_model, learnt_data, tmp_path):
    teacher = make_teacher(tmp_path / "untrained.pt", ["smoke", "fire"], cfg="yolov8n.yaml")  # no box at conf 0.25
    r = run_cli(
        "validate",
        *opts(student=str(learnt_model), teacher=str(teacher), data=str(learnt_data), out=str(tmp_path / "v")),
        *FAST,
        *sets("validation.min_map50_retention=null", "validation.min_teacher_agreement=0.5"),
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert "validation.min_teacher_agreement = undefined, required >= 0.5" in r.stderr
    report = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert report["teacher_agreement"] is None
    assert report["teacher_agreement_undefined"] == "the teacher predicts nothing at confidence >= 0.25 on this split"
    assert "| undefined* |" in (tmp_path / "v" / "validation.md").read_text()


def test_the_operating_point_is_the_max_f1_confidence_with_both_models_figures(self_validation):
    out, r = self_validation
    report = json.loads((out / "validation.json").read_text())
    point = report["operating_point"]
    assert point["rule"] == "max_f1" and 0.001 < point["conf"] < 1
    # student == teacher here: the same figures at the same confidence, and they are ultralytics' own P and R
    assert point["student"] == point["teacher"]
    assert point["student"]["p"] == pytest.approx(report["student"]["precision"], abs=1e-3)
    assert point["student"]["r"] == pytest.approx(report["student"]["recall"], abs=1e-3)
    assert f"Confidence **{point['conf']:g}** (max f1 on this split)" in (out / "validation.md").read_text()


def test_a_target_precision_picks_the_lowest_confidence_that_reaches_it(learnt_model, learnt_data, tmp_path):
    from wildfire_kd.config import ValidateSettings
    from wildfire_kd.validate.metrics import operating_point

    class Box:  # ultralytics' per-confidence curves: one class, precision rising with the threshold
        px = np.linspace(0, 1, 1000)
        p_curve = px[None] * 0.49 + 0.5  # 0.5 .. 0.99
        r_curve = 1 - px[None]
        f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve)

    point = operating_point(Box, Box, ValidateSettings(target_precision=0.8))
    assert point["rule"] == "precision>=0.8" and point["conf"] == pytest.approx(0.6126, abs=1e-3)  # 0.49c+0.5>=0.8
    assert point["student"]["p"] >= 0.8 and point["teacher"] == point["student"]
    point = operating_point(Box, Box, ValidateSettings(target_precision=1.0))
    assert point["conf"] is None and "never reaches" in point["unreachable"]

    class Blind(Box):  # finds nothing: F1 is 0 at every confidence
        f1_curve = np.zeros((1, 1000))

    point = operating_point(Blind, Box, ValidateSettings())
    assert point["conf"] is None and "finds no labelled object" in point["unreachable"]


def test_camera_figures_their_gates_and_an_unreadable_negative(learnt_model, learnt_data, tmp_path):
    negatives = tmp_path / "negatives"
    negatives.mkdir()
    Image.new("RGB", (128, 128), (150, 170, 200)).save(negatives / "sky.jpg")
    (negatives / "broken.jpg").write_bytes(b"not an image")
    cut = (learnt_data.parent / "images" / "val" / "val_00000.jpg").read_bytes()
    (negatives / "cut.jpg").write_bytes(cut[: len(cut) // 2])  # a JPEG cut in half (was exit 3)
    # a frame with a plume, filed as smoke-free: whatever the model finds there is a false alarm
    labelled = next(p for p in sorted((learnt_data.parent / "labels" / "val").glob("*.txt")) if p.read_text().strip())
    shutil.copyfile(learnt_data.parent / "images" / "val" / f"{labelled.stem}.jpg", negatives / "plume.jpg")
    r = run_cli(
        "validate",
        *opts(student=str(learnt_model), teacher=str(learnt_model), data=str(learnt_data), out=str(tmp_path / "v")),
        *FAST,
        *sets(
            f"validation.negatives={negatives}",
            "validation.max_false_alarms_per_1000=0",
            "validation.min_small_recall_retention=2",
            "validation.min_map50_retention=null",
        ),
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert "validation.max_false_alarms_per_1000" in r.stderr and "validation.min_small_recall_retention" in r.stderr
    camera = json.loads((tmp_path / "v" / "validation.json").read_text())["camera_figures"]
    student = camera["student"]
    background = sum(1 for p in (learnt_data.parent / "labels" / "val").glob("*.txt") if not p.read_text().strip())
    assert student["negative_frames"] == background + 2, "the split's unlabelled frames and the readable negatives"
    assert student["false_alarm_frames"] >= 1 and student["false_alarms_per_1000"] > 0
    assert student["unreadable"] == [str(negatives / "broken.jpg"), str(negatives / "cut.jpg")], "reported, not dropped"
    assert sum(b["objects"] for b in student["recall_by_size"].values()) > 0
    assert camera["recall_retention"]["medium"] in (1.0, None), "the same model on both sides"
    text = (tmp_path / "v" / "validation.md").read_text()
    assert "## Camera figures at confidence" in text and "broken.jpg" in text


def test_images_the_preflight_tolerated_are_skipped_by_the_camera_figures_too(learnt_model, learnt_data, tmp_path):
    """A malformed label row and an unreadable image, both within train.max_bad_fraction: validation finishes (was
    exit 3, an IndexError in the camera figures) and lists them as skipped."""
    data = tmp_path / "ds"
    shutil.copytree(learnt_data.parent, data)
    val_images = sorted((data / "images" / "val").glob("*.jpg"))
    (data / "labels" / "val" / f"{val_images[0].stem}.txt").write_text("0 0.5 0.5 0.1\n")  # a field short
    val_images[1].write_bytes(val_images[1].read_bytes()[:300])  # cut: no longer decodes
    r = run_cli(
        "validate",
        *opts(
            student=str(learnt_model), teacher=str(learnt_model), data=str(data / "data.yaml"), out=str(tmp_path / "v")
        ),
        *FAST,
        *sets("train.max_bad_fraction=0.2", "validation.min_map50_retention=null"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert report["camera_figures"]["skipped"] == sorted(str(p) for p in val_images[:2])
    objects = sum(b["objects"] for b in report["camera_figures"]["student"]["recall_by_size"].values())
    assert objects > 0, "the other frames are still scored"


def test_the_worst_robustness_retention_counts_a_total_loss_and_skips_the_undefined():
    """Model card, chart and gate read one figure: a perturbation that took all of a model's recall (retention 0) is
    its worst, not left out as if it had no value."""
    from wildfire_kd.validate.result import worst_retention

    def row(student, teacher):
        return {"student": {"recall": None, "retention": student}, "teacher": {"recall": None, "retention": teacher}}

    section = {"perturbed": {"jpeg_q30": row(0.0, None), "downscale_x0.5": row(0.8, 0.9), "darker_-40": row(1.1, None)}}
    assert worst_retention(section, "student") == 0.0
    assert worst_retention(section, "teacher") == 0.9
    assert worst_retention({"perturbed": {"jpeg_q30": row(None, None)}}, "student") is None
    assert worst_retention(None, "student") is None
