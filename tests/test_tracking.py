"""train.loggers: TensorBoard event files and one MLflow run per training run, offline, continued on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import invoke_cli, run_cli, sets, smoke_args, smoke_config

pytestmark = pytest.mark.slow
LOGGERS = "train.loggers=[tensorboard, mlflow]"


def _mlflow_runs(out: Path):
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("wildfire-kd")
    return client, client.search_runs([experiment.experiment_id])


@pytest.fixture(scope="module")
def tracked_build(fire_smoke_data, teacher_pt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tracked") / "build"
    r = run_cli(
        *smoke_args("build", fire_smoke_data, teacher_pt, out),
        *sets(LOGGERS),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_tensorboard_event_files_hold_the_kd_scalars_per_epoch(tracked_build):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_build / "train" / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/kd_cls", "train/kd_ld", "train/box_loss", "val/kd_ld", "metrics/mAP50(B)", "lr/pg0"} <= scalars
    assert [e.step for e in events.Scalars("train/kd_ld")][:2] == [1, 2]  # smoke.yaml: 2 epochs
    assert all(e.value > 0 for e in events.Scalars("train/kd_ld")[:2])


def test_mlflow_holds_one_run_with_params_epoch_metrics_validation_and_artifacts(tracked_build):
    client, runs = _mlflow_runs(tracked_build)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == json.loads((tracked_build / "train" / "tracking.json").read_text())["mlflow_run_id"]
    params = run.data.params
    assert params["distill.method"] == "dense" and params["train.epochs"] == "2" and params["train.imgsz"] == "64"
    history = client.get_metric_history(run.info.run_id, "train/kd_ld")
    assert [m.step for m in history][:2] == [1, 2] and all(m.value > 0 for m in history)
    validation = json.loads((tracked_build / "validation" / "validation.json").read_text())
    assert run.data.metrics["validation.student.map50"] == pytest.approx(validation["student"]["map50"])
    assert run.data.metrics["validation.teacher.latency_ms"] == pytest.approx(validation["teacher"]["latency_ms"])
    assert run.data.tags["validation.passed"] == "True" and run.data.tags["build.passed"] == "True"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"student.onnx", "MODEL_CARD.md", "build_report.json", "SHA256SUMS", "validation.json"} <= artifacts
    assert (tracked_build / "mlartifacts").is_dir(), "artifacts stay in the output folder, not ./mlruns"


def test_a_resumed_run_continues_the_same_mlflow_and_tensorboard_run(fire_smoke_data, teacher_pt, tmp_path):
    from wildfire_kd.distill import train

    config = smoke_config(fire_smoke_data, teacher_pt, tmp_path, LOGGERS)

    class Stop(Exception):
        pass

    def stop_in_epoch_2(trainer):
        if trainer.epoch == 1 and trainer._batch_index == 1:
            raise Stop

    with pytest.raises(Stop):
        train(config, callbacks={"on_train_batch_start": [stop_in_epoch_2]})
    run_id = json.loads((tmp_path / "student" / "tracking.json").read_text())["mlflow_run_id"]
    r = run_cli("train", "--resume", str(tmp_path / "student"))
    assert r.returncode == 0, r.stderr[-3000:]
    client, runs = _mlflow_runs(tmp_path)
    assert [run.info.run_id for run in runs] == [run_id], "one run, continued"
    steps = [m.step for m in client.get_metric_history(run_id, "train/kd_ld")]
    assert steps[:2] == [1, 2], "epoch 1 before the stop, epoch 2 after the resume"
    assert "validation.student.map50" in runs[0].data.metrics


def test_a_logger_whose_package_is_missing_exits_2_naming_the_extra(fire_smoke_data, teacher_pt, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    r = invoke_cli(
        *smoke_args("train", fire_smoke_data, teacher_pt, tmp_path),
        "--set",
        LOGGERS,
    )
    assert r.returncode == 2
    assert "train.loggers asks for mlflow, but mlflow is not installed: pip install 'wildfire-kd[tracking]'" in r.stderr
    assert not (tmp_path / "student").exists(), "refused before training"
