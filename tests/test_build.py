"""`wildfire-kd build`: every artifact, gates that fail the build by stage, skipping and resuming on re-run."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from conftest import SMOKE_CONFIG, run_cli, smoke_args

pytestmark = pytest.mark.slow


def _build(data: Path, teacher: Path, out: Path, *extra: str):
    return run_cli(
        *smoke_args("build", data, teacher, out),
        *extra,
    )


def _sums(out: Path) -> dict[str, str]:
    rows = (out / "SHA256SUMS").read_text().splitlines()
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in rows}


@pytest.fixture(scope="module")
def smoke_build(fire_smoke_data, teacher_pt, tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    r = _build(fire_smoke_data, teacher_pt, out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_build_writes_every_artifact_and_verifiable_sums(smoke_build):
    out, r = smoke_build
    for rel in (
        "train/weights/best.pt",
        "train/results.csv",
        "train/batch_log.jsonl",
        "validation/validation.json",
        "validation/validation.md",
        "validation/validation.png",
        "export/student.onnx",
        "export/export.json",
        "export/parity.json",
        "build_report.json",
        "MODEL_CARD.md",
        "SHA256SUMS",
    ):
        assert (out / rel).is_file(), rel
    sums = _sums(out)
    assert "export/student.onnx" in sums and "build_report.json" in sums and "MODEL_CARD.md" in sums
    for rel, digest in sums.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest, rel
    for stage in ("train", "validate", "export", "parity"):
        assert f"build: ✓ {stage} ran" in r.stdout


def test_the_onnx_file_carries_the_builds_own_validation_and_operating_point(smoke_build):
    import onnx

    from wildfire_kd.edge.metadata import read_onnx as read_metadata

    out, _ = smoke_build
    meta = read_metadata(onnx.load(str(out / "export" / "student.onnx")))
    validation = json.loads((out / "validation" / "validation.json").read_text())
    assert meta["validation"]["student"] == {k: validation["student"][k] for k in meta["validation"]["student"]}
    point = validation["operating_point"]
    assert meta["operating_point"] == (point if point and point["conf"] is not None else None)


def test_build_report_holds_stages_versions_and_hashes(smoke_build, teacher_pt):
    out, _ = smoke_build
    report = json.loads((out / "build_report.json").read_text())
    assert report["passed"] is True and report["failures"] == []
    assert [s["name"] for s in report["stages"]] == ["train", "validate", "export", "parity"]
    assert all(s["seconds"] > 0 and len(s["fingerprint"]) == 64 for s in report["stages"])
    assert report["inputs"]["teacher"]["sha256"] == hashlib.sha256(teacher_pt.read_bytes()).hexdigest()
    assert len(report["config_sha256"]) == 64 and report["versions"]["ultralytics"].startswith("8.4")
    assert report["outputs"]["export/student.onnx"] == _sums(out)["export/student.onnx"]
    card = (out / "MODEL_CARD.md").read_text()
    for heading in (
        "## What it is",
        "## Data",
        "## Student vs teacher",
        "## Model files and parity with PyTorch",
        "## Intended use",
        "## Limitations",
    ):
        assert heading in card
    assert "**Build PASSED**" in card and "`student.onnx`" in card
    from wildfire_kd.config import DistillSettings

    d = DistillSettings()
    assert f"{d.method} response distillation" in card and f"λ_distillation {d.lambda_distillation}" in card
    assert "`wildfire-kd-edge`" in card


def test_rerun_skips_unchanged_stages_and_redoes_what_changed(smoke_build, fire_smoke_data, teacher_pt):
    out, _ = smoke_build
    onnx_before = (out / "export" / "student.onnx").read_bytes()
    r = _build(fire_smoke_data, teacher_pt, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(f"build: ✓ {s} skipped" in r.stdout for s in ("train", "validate", "export", "parity"))
    assert (out / "export" / "student.onnx").read_bytes() == onnx_before
    r = _build(fire_smoke_data, teacher_pt, out, "--set", "parity.images=4")  # only parity's inputs changed
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train skipped" in r.stdout and "export skipped" in r.stdout and "parity ran" in r.stdout
    assert json.loads((out / "export" / "parity.json").read_text())["inputs"]["images"] == 4


def test_failed_validation_gate_fails_the_build_naming_stage_and_gate(fire_smoke_data, teacher_pt, tmp_path):
    r = _build(fire_smoke_data, teacher_pt, tmp_path, "--set", "validation.min_map50_retention=0.9")
    assert r.returncode == 1
    assert "validate: gate validation.min_map50_retention = undefined, required >= 0.9" in r.stderr
    assert "build: ✗ validate ran" in r.stdout and "build: ✓ parity ran" in r.stdout  # later stages still report
    report = json.loads((tmp_path / "build_report.json").read_text())
    assert report["passed"] is False and (tmp_path / "SHA256SUMS").is_file()
    assert "**Build FAILED**" in (tmp_path / "MODEL_CARD.md").read_text()


def test_failed_parity_fails_the_build_naming_the_stage(fire_smoke_data, teacher_pt, tmp_path):
    r = _build(fire_smoke_data, teacher_pt, tmp_path, "--set", "parity.fp32.score_atol=1e-15")
    assert r.returncode == 1
    assert "parity: fp32: scores max |Δ|" in r.stderr and "build: ✗ parity ran" in r.stdout


def test_interrupted_training_resumes_on_rerun(fire_smoke_data, teacher_pt, tmp_path, monkeypatch):
    from ultralytics.utils.callbacks import base as callbacks

    from wildfire_kd.config import load_config
    from wildfire_kd.pipeline import build

    class Killed(Exception):
        pass

    def kill_in_second_epoch(trainer):
        if trainer.epoch == 1:
            raise Killed

    defaults = {k: list(v) for k, v in callbacks.default_callbacks.items()}
    defaults["on_train_epoch_start"].append(kill_in_second_epoch)
    monkeypatch.setattr(callbacks, "default_callbacks", defaults)
    config = load_config(SMOKE_CONFIG, [f"train.data={fire_smoke_data}", f"train.teacher={teacher_pt}"])
    with pytest.raises(Killed):
        build(config, tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "train" / "weights" / "last.pt").is_file() and not (tmp_path / "SHA256SUMS").exists()

    r = _build(fire_smoke_data, teacher_pt, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "build: ✓ train resumed" in r.stdout
    with open(tmp_path / "train" / "results.csv") as f:
        assert [int(row["epoch"].strip()) for row in csv.DictReader(f)] == [1, 2]


def test_stage_error_stops_the_build_and_names_it(fire_smoke_data, teacher_pt, tmp_path, monkeypatch):
    import onnxslim

    from wildfire_kd.config import load_config
    from wildfire_kd.errors import StageFailure
    from wildfire_kd.pipeline import build

    def broken(model, *args, **kwargs):
        raise RuntimeError("slim broke")

    monkeypatch.setattr(onnxslim, "slim", broken)
    config = load_config(SMOKE_CONFIG, [f"train.data={fire_smoke_data}", f"train.teacher={teacher_pt}"])
    with pytest.raises(StageFailure, match="build stopped at stage export: .*slim broke") as stopped:
        build(config, tmp_path)
    assert stopped.value.exit_code == 3, "a broken exporter is the tool's failure, not the model's"
    report = json.loads((tmp_path / "build_report.json").read_text())
    assert report["stopped_at"] == "export" and [s["status"] for s in report["stages"]] == ["ran", "ran", "failed"]


def test_a_training_stage_without_a_student_stops_the_build_cleanly(fire_smoke_data, teacher_pt, tmp_path, monkeypatch):
    import wildfire_kd.distill as distill
    from wildfire_kd.config import load_config
    from wildfire_kd.errors import StageFailure
    from wildfire_kd.pipeline import build

    def no_student(config, resume=None, **kwargs):  # training that ended without writing best.pt
        run = Path(config.train.out) / config.train.name
        return distill.TrainResult(
            str(run), None, None, str(run / "results.csv"), str(run / "batch_log.jsonl"), 0, 0, 0.0
        )

    monkeypatch.setattr(distill, "train", no_student)
    config = load_config(SMOKE_CONFIG, [f"train.data={fire_smoke_data}", f"train.teacher={teacher_pt}"])
    with pytest.raises(StageFailure, match="build stopped at stage train: training wrote no best.pt") as stopped:
        build(config, tmp_path)
    assert stopped.value.exit_code == 3  # the tool did not produce a model: not a gate
    report = json.loads((tmp_path / "build_report.json").read_text())
    assert report["stopped_at"] == "train" and [s["status"] for s in report["stages"]] == ["failed"]


def test_build_without_teacher_exits_2(fire_smoke_data, tmp_path):
    r = run_cli("build", "--config", str(SMOKE_CONFIG), "--data", str(fire_smoke_data), "--out", str(tmp_path))
    assert r.returncode == 2 and "build needs a dataset and a teacher" in r.stderr
