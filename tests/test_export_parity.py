"""`wildfire-kd export` and `wildfire-kd parity` on a small trained student (CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import make_teacher, opts, run_cli, unseal

pytestmark = pytest.mark.slow


def test_export_writes_checked_files_with_their_facts(exported, learnt_model):
    from wildfire_kd.weights import sha256_file

    report = json.loads((exported / "export.json").read_text())
    assert [(f["format"], f["variant"]) for f in report["files"]] == [
        ("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "bf16"),
        ("openvino", "int8"), ("ncnn", "fp32"), ("ncnn", "fp16"),
    ]  # fmt: skip
    sizes = {}
    for f in report["files"]:
        path = Path(f["path"])
        if f["format"] != "onnx":
            continue
        onnx.checker.check_model(str(path), full_check=True)
        assert f["sha256"] == sha256_file(path) and f["opset"] == 17 and f["ir_version"] <= 10
        assert f["inputs"] == [{"name": "images", "shape": [1, 3, 128, 128], "dtype": "float"}]
        assert f["outputs"][0]["name"] == "output0" and f["outputs"][0]["shape"][:2] == [1, 6]
        sizes[f["variant"]] = f["size_mb"]
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    assert report["metadata"]["student_sha256"] == sha256_file(learnt_model)
    assert not (learnt_model.parent / "best.onnx").exists(), "the run folder is left untouched"


def test_metadata_round_trips_as_json(exported, learnt_model):
    from wildfire_kd.edge.metadata import read_onnx as read_metadata
    from wildfire_kd.weights import sha256_file

    for name, variant in (("student.onnx", "fp32"), ("student_fp16.onnx", "fp16"), ("student_int8.onnx", "int8")):
        meta = read_metadata(onnx.load(str(exported / name)))
        assert meta["variant"] == variant
        assert meta["names"] == ["smoke", "fire"] and meta["imgsz"] == [128, 128] and meta["stride"] == 32
        assert meta["input"]["pad_value"] == 114 and meta["input"]["color"] == "RGB"
        assert meta["student_sha256"] == sha256_file(learnt_model)
        assert meta["version"] and "distillation" in meta and "validation" in meta
    # the learnt model was trained with distill.response=false: its run records the KD settings all the same
    assert read_metadata(onnx.load(str(exported / "student.onnx")))["distillation"]["response"] is False


def test_variants_keep_the_decode_tail_in_float(exported):
    from wildfire_kd.export import decode_tail

    fp32 = onnx.load(str(exported / "student.onnx")).graph
    tail = set(decode_tail(fp32))
    ops = {n.op_type for n in fp32.node if n.name in tail}
    assert {"Softmax", "Conv", "Sigmoid", "Concat", "Mul"} <= ops  # DFL, scores, final concat, stride scaling
    int8 = onnx.load(str(exported / "student_int8.onnx")).graph
    producers = {o: n for n in int8.node for o in n.output}
    dfl = next(n for n in int8.node if n.op_type == "Conv" and "dfl" in n.name)
    assert dfl.input[1] not in producers, "the DFL weight is a plain float initializer, not dequantized"
    quantized_convs = [n for n in int8.node if n.op_type == "Conv" and n.input[1] in producers]
    assert len(quantized_convs) >= 60, "the feature convolutions are quantized"


@pytest.mark.parametrize("name", ["student.onnx", "student_fp16.onnx", "student_int8.onnx"])
def test_parity_passes_on_the_honest_export(exported, learnt_model, learnt_data, name):
    r = run_cli("parity", "--weights", str(learnt_model), "--onnx", str(exported / name), "--data", str(learnt_data))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "✓ boxes" in r.stdout and "✓ scores" in r.stdout and "✓ detections" in r.stdout
    variant = {"student.onnx": "fp32", "student_fp16.onnx": "fp16", "student_int8.onnx": "int8"}[name]
    report = json.loads((exported / ("parity.json" if variant == "fp32" else f"parity_{variant}.json")).read_text())
    assert report["passed"] and report["inputs"] == {"images": 12, "random": 2}
    assert report["detections"]["torch_detections"] > 0
    if variant == "fp32":
        assert report["tensors"][0]["max_abs"] < 0.02 and report["tensors"][1]["max_abs"] < 1e-4
        assert report["detections"]["matched"] == report["detections"]["torch_detections"]
    if variant == "int8":
        assert set(report["map50"]) == {"fp32", "int8", "drop"} and report["map50"]["fp32"] > 0.3
        assert report["map50"]["drop"] <= 0.05


def test_parity_fails_on_a_slightly_perturbed_copy(exported, learnt_model, learnt_data, tmp_path):
    model = onnx.load(str(exported / "student.onnx"))
    weight = next(i for i in model.graph.initializer if len(i.dims) == 4 and i.dims[0] >= 16)
    array = onnx.numpy_helper.to_array(weight) * np.float32(1.01)  # +1% on one early conv weight tensor
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(tmp_path / "student.onnx"))
    args = ["parity", "--weights", str(learnt_model), "--onnx", str(tmp_path / "student.onnx"), "--data",
            str(learnt_data)]  # fmt: skip
    r = run_cli(*args)
    assert r.returncode == 2 and "changed after export" in r.stderr, "the seal catches the edit before any value"
    onnx.save(unseal(model), str(tmp_path / "student.onnx"))  # an export before seals: the values must catch it
    r = run_cli(*args)
    assert r.returncode == 1, r.stdout[-2000:]
    assert "✗ boxes" in r.stdout
    assert "boxes max |Δ|" in r.stderr and "> atol 0.02" in r.stderr
    assert json.loads((tmp_path / "parity.json").read_text())["passed"] is False


def test_parity_against_other_weights_fails_on_metadata_and_values(exported, learnt_data, tmp_path):
    other = make_teacher(tmp_path / "other.pt", ["smoke", "fire"], cfg="yolov8n.yaml")
    r = run_cli(
        "parity",
        *opts(weights=str(other), onnx=str(exported / "student.onnx"), data=str(learnt_data), out=str(tmp_path)),
    )
    assert r.returncode == 1 and "is not the sha256 of" in r.stderr


def test_onnx_for_another_size_exits_2(exported, learnt_model):
    r = run_cli("parity", "--weights", str(learnt_model), "--onnx", str(exported / "student.onnx"), "--imgsz", "64")
    assert r.returncode == 2 and "does not take 64x64 images" in r.stderr and "Traceback" not in r.stderr


def test_truncated_onnx_exits_2(exported, learnt_model, tmp_path):
    data = (exported / "student.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    r = run_cli("parity", "--weights", str(learnt_model), "--onnx", str(tmp_path / "cut.onnx"))
    assert r.returncode == 2 and "truncated or corrupt" in r.stderr and "Traceback" not in r.stderr


def test_simplifier_failure_fails_the_export(learnt_model, tmp_path, monkeypatch):
    import onnxslim

    from wildfire_kd.config import ExportSettings
    from wildfire_kd.errors import StageFailure
    from wildfire_kd.export import export

    def broken(model, *args, **kwargs):
        raise RuntimeError("shape inference exploded")

    monkeypatch.setattr(onnxslim, "slim", broken)
    weights = tmp_path / "best.pt"
    shutil.copyfile(learnt_model, weights)
    with pytest.raises(StageFailure, match="onnxslim .* failed to simplify .*shape inference exploded"):
        export(weights, tmp_path / "out", ExportSettings())
    assert not (tmp_path / "out" / "student.onnx").exists()


def test_a_detection_that_survives_nms_by_an_iou_tie_is_borderline_not_a_difference():
    # seen in the demo: a box overlapping a stronger one at IoU 0.700 = nms_iou survived in PyTorch; in fp16 the
    # stronger box moved by 0.05 px and suppressed it. Same case, and a real miss for contrast.
    from wildfire_kd.config import ParitySettings
    from wildfire_kd.parity import _match

    settings = ParitySettings()
    strong, tied = [14.84, 59.71, 48.93, 91.38, 0.568, 0], [22.14, 59.13, 50.18, 89.29, 0.294, 0]
    apart = [60.0, 60.0, 90.0, 90.0, 0.294, 0]  # overlaps nothing: losing it is a difference
    onnx = np.array([[14.84, 59.66, 48.94, 91.34, 0.568, 0]], dtype=np.float32)
    tie = _match(np.array([strong, tied], dtype=np.float32), onnx, settings, 0.75, 0.02)
    assert (tie["matched"], tie["borderline"], tie["unmatched"]) == (1, 1, 0)
    miss = _match(np.array([strong, apart], dtype=np.float32), onnx, settings, 0.75, 0.02)
    assert (miss["matched"], miss["borderline"], miss["unmatched"]) == (1, 0, 1)
    strict = _match(
        np.array([strong, tied], dtype=np.float32), onnx, settings.model_copy(update={"nms_iou_tie": 0.0}), 0.75, 0.02
    )
    assert strict["unmatched"] == 1, "the margin is what makes it a tie"


def test_an_int8_file_must_be_int8(exported, learnt_model, learnt_data, tmp_path):
    """Op types that quantize nothing here are exit 2 naming the graph's own; a file whose metadata says int8 over
    an fp32 graph fails parity (it passed before)."""
    r = run_cli(
        "export", *opts(weights=str(learnt_model), out=str(tmp_path / "e"), data=str(learnt_data)), "--int8",
        "--set", "export.int8_op_types=[Gemm]", "--set", "export.int8_calibration_images=2",
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    message = r.stderr.strip().splitlines()[-1]
    assert "int8 export quantized no node" in message and "Conv" in message and "Traceback" not in r.stderr
    model = unseal(onnx.load(str(exported / "student.onnx")))  # an export before seals (sealed, an edit: exit 2)
    next(p for p in model.metadata_props if p.key == "wildfire_kd.variant").value = '"int8"'
    onnx.save(model, str(tmp_path / "student_int8.onnx"))
    shutil.copyfile(exported / "student.onnx", tmp_path / "student.onnx")
    r = run_cli(
        "parity", *opts(weights=str(learnt_model), onnx=str(tmp_path / "student_int8.onnx"), data=str(learnt_data))
    )
    assert r.returncode == 1, r.stderr[-2000:]
    assert "metadata says int8 but the graph has no QuantizeLinear/DequantizeLinear node" in r.stderr


FOLDERS = ["student_openvino_model", "student_bf16_openvino_model", "student_int8_openvino_model",
           "student_ncnn_model", "student_fp16_ncnn_model"]  # fmt: skip


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_other_format_carries_our_metadata_and_passes_parity(exported, learnt_model, learnt_data, folder):
    from wildfire_kd.edge.runtimes import open_session
    from wildfire_kd.weights import sha256_file

    fmt, variant = ("openvino" if "openvino" in folder else "ncnn"), folder.split("_")[1]
    variant = variant if variant in ("bf16", "int8", "fp16") else "fp32"
    session = open_session(exported / folder)
    assert session.runtime == fmt and session.metadata["variant"] == variant and session.metadata["format"] == fmt
    assert session.metadata["names"] == ["smoke", "fire"] and session.metadata["imgsz"] == [128, 128]
    assert session.metadata["student_sha256"] == sha256_file(learnt_model)
    r = run_cli("parity", *opts(weights=str(learnt_model), onnx=str(exported / folder), data=str(learnt_data)))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads((exported / f"parity_{fmt}_{variant}.json").read_text())
    assert report["passed"] and report["format"] == fmt and report["variant"] == variant


def _scale_weights(folder: Path, suffix: str) -> None:
    """Scale a run of float32 weights in the middle of the folder's .bin by 1.01 (a slightly wrong model)."""
    weights = next(folder.glob(f"*{suffix}"))
    data = bytearray(weights.read_bytes())
    start = (len(data) // 2) & ~3
    chunk = np.frombuffer(bytes(data[start : start + 40_000]), dtype=np.float32) * np.float32(1.01)
    data[start : start + 40_000] = chunk.tobytes()
    weights.write_bytes(bytes(data))


@pytest.mark.parametrize("folder", ["student_openvino_model", "student_ncnn_model"])
def test_parity_fails_on_a_perturbed_folder_naming_it(exported, learnt_model, learnt_data, folder, tmp_path):
    copy = tmp_path / folder
    shutil.copytree(exported / folder, copy)
    _scale_weights(copy, ".bin")
    args = ["parity", *opts(weights=str(learnt_model), onnx=str(copy), data=str(learnt_data), out=str(tmp_path))]
    r = run_cli(*args)
    assert r.returncode == 2 and "changed after export" in r.stderr and str(copy) in r.stderr, r.stderr[-2000:]
    unseal(copy)  # an export before seals: the values must catch it
    r = run_cli(*args)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "max |Δ|" in r.stderr and "Traceback" not in r.stderr
    assert str(copy) in r.stdout, "the file that fails is named"


def test_a_missing_format_package_is_exit_2_naming_the_extra(learnt_model, tmp_path, monkeypatch):
    import importlib.util

    from wildfire_kd.config import ExportSettings
    from wildfire_kd.edge.runtimes import open_session
    from wildfire_kd.errors import InputError
    from wildfire_kd.export import export

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pnnx" else real(name, *a))
    with pytest.raises(InputError, match=r"needs pnnx: pip install 'wildfire-kd\[ncnn\]'"):
        export(learnt_model, tmp_path / "e", ExportSettings(formats=["onnx", "ncnn"]))
    assert not (tmp_path / "e").exists(), "refused before any work"
    import wildfire_kd.edge.runtimes as runtimes

    monkeypatch.setitem(runtimes.RUNTIMES, "openvino", "openvino_that_is_not_installed")
    (tmp_path / "m_openvino_model").mkdir()
    (tmp_path / "m_openvino_model" / "m.xml").write_text("<net/>")
    with pytest.raises(InputError, match=r"needs the openvino runtime.*'wildfire-kd\[openvino\]'"):
        open_session(tmp_path / "m_openvino_model")
