"""benchmarks/distill_compare.py: its helpers, and one tiny end-to-end run so the documented command keeps working."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def _load():
    spec = importlib.util.spec_from_file_location("distill_compare", REPO / "benchmarks" / "distill_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variant_option_becomes_config_overrides():
    bench = _load()
    name, args = bench._parse_variant("d_l1:distill.lambda_distillation=1,distill.schedule=cosine")
    assert name == "d_l1"
    assert args == ["--set", "distill.lambda_distillation=1", "--set", "distill.schedule=cosine"]
    with pytest.raises(SystemExit, match="NAME:key=value"):
        bench._parse_variant("c_anchor")


def test_seeds_aggregate_to_mean_and_sample_std_and_the_table_shows_both():
    bench = _load()
    runs = [
        {"map50": 0.8, "map50_95": 0.5, "teacher_agreement": 0.9, "peak_gpu_mb": None, "seconds_per_epoch": 2.0},
        {"map50": 0.6, "map50_95": 0.3, "teacher_agreement": 0.7, "peak_gpu_mb": None, "seconds_per_epoch": 4.0},
    ]
    r = bench._aggregate(runs)
    assert r["map50"] == pytest.approx(0.7) and r["map50_std"] == pytest.approx(0.1414, abs=1e-4)
    assert r["seconds_per_epoch"] == 3.0 and r["peak_gpu_mb"] is None and r["seeds"] == 2
    row = dict(r, retention_map50=None, retention_map50_95=0.9, median_step_s=0.1, step_cost_vs_a=1.0, peak_rss_mb=9)
    base = dict(row, map50_95=0.45)
    table = bench._table({"a_none": base, "d_dense": row}, spread=True)
    assert table[-1].startswith("| d_dense | 0.700 ± 0.141 | 0.400 ± 0.141 | -0.050 | – | 0.900 |")


@pytest.mark.slow
def test_the_benchmark_command_writes_its_table(tmp_path, learnt_data, learnt_model):
    out = tmp_path / "bench"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "distill_compare.py"),
        "--data",
        str(learnt_data),
        "--teacher",
        str(learnt_model),
        "--epochs",
        "1",
        "--imgsz",
        "64",
        "--batch",
        "8",
        "--only",
        "a_none,d_dense,c_pseudo",
        "--out",
        str(out),
    ]
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert set(report["variants"]) == {"a_none", "d_dense", "c_pseudo"}
    for figures in report["variants"].values():
        assert 0.0 <= figures["map50_95"] <= figures["map50"] <= 1.0
        assert figures["seconds_per_epoch"] > 0 and figures["median_step_s"] > 0 and figures["peak_rss_mb"] > 100
    assert report["variants"]["a_none"]["step_cost_vs_a"] == 1.0
    profile = report["kd_step_profile"]["methods"]
    # dense needs no NMS and no matching; pseudo has both (a trained teacher: its KD parts are really timed)
    assert set(profile["dense"]["median_s"]) == {"student_forward", "teacher_forward", "losses", "backward"}
    assert set(profile["pseudo"]["median_s"]) == {
        "student_forward",
        "teacher_forward",
        "nms_pseudo_targets",
        "matching",
        "losses",
        "backward",
    }
    assert all(v > 0 for m in profile.values() for v in m["median_s"].values())
    text = (out / "RESULTS.md").read_text()
    assert "| a_none |" in text and "| d_dense |" in text and "| part | dense | pseudo |" in text


def _run_benchmark(script: str, *args: str) -> None:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    cmd = [sys.executable, str(REPO / "benchmarks" / script), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_the_runtime_benchmark_times_every_format_and_precision_beside_ultralytics(tmp_path, learnt_data, learnt_model):
    out = tmp_path / "speed"
    _run_benchmark(
        "detect_speed.py", "--weights", str(learnt_model), "--data", str(learnt_data), "--imgsz", "64",
        "--frames", "2", "--warmup", "1", "--sequence-width", "256", "--out", str(out),
    )  # fmt: skip
    rows = json.loads((out / "results.json").read_text())
    made = {(r["format"], r["variant"]) for r in rows}
    assert made == {("onnx", v) for v in ("fp32", "fp16", "int8")} | {
        ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"), ("ncnn", "fp32"), ("ncnn", "fp16"),
    }  # fmt: skip
    for r in rows:
        assert r["ours_total_ms"] > 0 and r["ultralytics_ms"] > 0 and r["ultralytics_onnx_fp32_ms"] > 0
        assert 0.0 <= r["map50"] <= 1.0
    fp32 = next(r for r in rows if r["format"] == "onnx" and r["variant"] == "fp32")
    assert fp32["map50_drop"] == 0.0, "the reference's drop against itself"
    assert "| 64 | openvino | int8 |" in (out / "RESULTS.md").read_text()


@pytest.mark.slow
def test_the_alarm_benchmark_compares_the_camera_paths_parts_at_each_profile(tmp_path, learnt_model):
    out = tmp_path / "alarms"
    _run_benchmark(
        "alarm_tradeoff.py", "--weights", str(learnt_model), "--count", "4", "--frames", "8", "--width", "256",
        "--imgsz", "64", "96", "--tiles", "2", "--out", str(out),
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["64 px", "64 px, 2 tiles", "96 px"]
    for setting in results.values():
        assert {"bare alarm rule", "+ static + events (cold start)", "+ static (seeded) + events", "chosen"} <= set(
            setting
        )
        bare, both = setting["bare alarm rule"], setting["+ static (seeded) + events"]
        assert bare["positives"] == 2, "every other synthetic sequence is a fire"
        assert bare["suppressed"] == 0 and bare["camera"]["static"] is None and both["camera"]["events"]
        assert setting["ms_per_frame"] > 0
    assert "| 64 px · + static (seeded) + events |" in (out / "RESULTS.md").read_text()


@pytest.mark.slow
def test_the_service_capacity_benchmark_measures_a_served_model(tmp_path, learnt_model):
    out = tmp_path / "capacity"
    _run_benchmark(
        "serve_capacity.py", "--weights", str(learnt_model), "--imgsz", "128", "--runtimes", "onnxruntime",
        "--seconds", "6", "--cameras", "2", "--frames", "40", "--early", "2", "--late", "4", "--out", str(out),
    )  # fmt: skip
    result = json.loads((out / "results.json").read_text())["128 px, onnxruntime"]
    assert result["fps"] > 0 and result["frames"] > 0 and result["exit"] == 143
    assert result["rss_early_mb"] > 50 and result["cpu_percent"] > 0
    assert "| 128 px, onnxruntime |" in (out / "RESULTS.md").read_text()
