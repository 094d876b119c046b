"""Shared fixtures: tiny synthetic datasets and untrained teachers built from ultralytics' model yamls."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wildfire_kd.ultralytics_env import prepare_ultralytics

prepare_ultralytics()

REPO = Path(__file__).resolve().parents[1]
# one model's figures as validation.json holds them (for reports read back)
MODEL_FIGURES = {
    "weights": "w.pt", "sha256": "0" * 64, "size_mb": 6.0, "parameters": 3, "gflops": 0.3, "latency_ms": 1.0,
    "latency_p90_ms": 1.2, "precision": 0.8, "recall": 0.7, "map50": 0.75, "map50_95": 0.5, "per_class": {},
}  # fmt: skip
SMOKE_CONFIG = REPO / "configs" / "smoke.yaml"


def make_teacher(path: Path, names: list[str], cfg: str = "yolov8s.yaml") -> Path:
    """Save an untrained detection model as an ultralytics checkpoint, as a finetuned teacher would be saved."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(cfg, nc=len(names), verbose=False)
    model.names = dict(enumerate(names))
    torch.manual_seed(0)
    torch.save({"model": model.half(), "train_args": {"imgsz": 64}}, path)
    return path


def run_cli(
    *args: str,
    cwd: Path | None = None,
    timeout: int = 600,
    record_loss: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run the real console script in a fresh interpreter (ultralytics keeps global state). ``record_loss``: a file
    that receives each training loss the model returned, per image (tests/loss_recorder.py); ``env``: variables
    set for it."""
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", **(env or {})}
    program = ["-m", "wildfire_kd.cli"]
    if record_loss is not None:
        program = [str(REPO / "tests" / "loss_recorder.py"), str(record_loss)]
    return subprocess.run(
        [sys.executable, *program, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def opts(**options: object) -> list[str]:
    """Command-line options from keywords, in order: opts(data=d, imgsz=64) -> ['--data', 'd', '--imgsz', '64']."""
    return [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]


def sets(*overrides: str) -> list[str]:
    """--set overrides: sets('a.b=1', 'c.d=2') -> ['--set', 'a.b=1', '--set', 'c.d=2']."""
    return [item for override in overrides for item in ("--set", override)]


def smoke_args(command: str, data: Path, teacher: Path | None, out: Path, *extra: str) -> list[str]:
    """`COMMAND --config configs/smoke.yaml --data DATA [--teacher TEACHER] --out OUT EXTRA...` for run_cli."""
    teacher_args = ["--teacher", str(teacher)] if teacher is not None else []
    return [command, "--config", str(SMOKE_CONFIG), "--data", str(data), *teacher_args, "--out", str(out), *extra]


def smoke_config(data: Path, teacher: Path | None, out: Path, *overrides: str):
    """configs/smoke.yaml with the data, teacher and output folder set, then ``overrides`` (--set syntax)."""
    from wildfire_kd.config import load_config

    given = [f"train.data={data}", f"train.out={out}"] + ([f"train.teacher={teacher}"] if teacher else [])
    return load_config(SMOKE_CONFIG, [*given, *overrides])


def invoke_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in this process (typer's runner): the same exit codes and messages as ``run_cli``, without a new
    interpreter importing torch each time. For checks that fail before any training state is left behind."""
    import contextlib

    from typer.testing import CliRunner

    from wildfire_kd.cli import app

    with contextlib.chdir(cwd) if cwd else contextlib.nullcontext():
        result = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def fire_smoke_data(tmp_path_factory) -> Path:
    from wildfire_kd.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("data2") / "ds", train_images=16, val_images=8, imgsz=96, seed=1)


@pytest.fixture(scope="session")
def smoke_only_data(tmp_path_factory) -> Path:
    from wildfire_kd.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("data1") / "ds", classes=["smoke"], train_images=16, val_images=8, imgsz=96, seed=2
    )


@pytest.fixture(scope="session")
def teacher_pt(tmp_path_factory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt", ["smoke", "fire"])


@pytest.fixture(scope="session")
def smoke_teacher_pt(tmp_path_factory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("teacher1") / "teacher.pt", ["smoke"])


@pytest.fixture(scope="session")
def learnt_data(tmp_path_factory) -> Path:
    """Enough synthetic images for a yolov8n to learn something in ~20 s on 2 CPU cores."""
    from wildfire_kd.synth import synthesize

    # without distractor frames and small plumes: the data the parity and agreement bounds were set on (with them,
    # this tiny val split shows an fp16 NMS tie and a one-detection mAP50 swing of 0.017 against the 0.01 bound)
    return synthesize(
        tmp_path_factory.mktemp("data_learnt") / "ds",
        train_images=48,
        val_images=12,
        imgsz=128,
        seed=7,
        distractor_frames=0,
        small_plumes=0,
    )


@pytest.fixture(scope="session")
def learnt_model(learnt_data, tmp_path_factory) -> Path:
    """A yolov8n trained without a teacher to mAP50 > 0.3 on `learnt_data` (a stand-in for a finetuned model)."""
    out = tmp_path_factory.mktemp("learnt")
    r = run_cli(
        "train",
        "--data",
        str(learnt_data),
        "--student",
        "yolov8n.yaml",
        "--epochs",
        "20",
        "--imgsz",
        "128",
        "--batch",
        "8",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--name",
        "m",
        "--set",
        "distill.response=false",
        "--set",
        "train.plots=false",
        "--set",
        "train.optimizer=AdamW",
        "--set",
        "train.lr0=0.004",
        "--set",
        "train.warmup_epochs=1",
        "--set",
        "train.close_mosaic=5",
        "--set",
        "train.ultralytics={nbs: 8}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "m" / "weights" / "best.pt"


@pytest.fixture(scope="session")
def exported(learnt_model, learnt_data, tmp_path_factory) -> Path:
    """`learnt_model` exported as fp32, fp16 and int8 ONNX files, OpenVINO fp32 / bf16 / int8 and NCNN fp32 / fp16
    folders (with their metadata)."""
    out = tmp_path_factory.mktemp("export")
    home = tmp_path_factory.mktemp("home")  # a home of its own: nothing may be written there
    r = run_cli(
        "export",
        "--weights",
        str(learnt_model),
        "--out",
        str(out),
        "--half",
        "--int8",
        "--data",
        str(learnt_data),
        "--set",
        "export.int8_calibration_images=12",
        "--formats",
        "onnx,openvino,ncnn",
        env={"HOME": str(home), "CI": "", "NNCF_CI": ""},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # OpenVINO's converter and NNCF send usage telemetry and keep a client id in ~/intel unless declined
    assert not (home / "intel").exists(), "export wrote OpenVINO's telemetry client id into the user's home"
    assert f"report {out / 'export.json'}" in r.stdout
    assert f"int8 {out / 'student_int8_openvino_model'} (" in r.stdout and ", ncnn, sha256 " in r.stdout
    return out


def unseal(model):
    """``model`` without export's seal, as an export before seals wrote it (which cameras still run), so that the
    checks behind the seal can be reached after an edit: an onnx ModelProto (returned), or a model folder whose
    metadata.yaml loses the key (a Path, returned)."""
    import json

    from wildfire_kd.edge.metadata import META_PREFIX, SEAL_KEY
    from wildfire_kd.layout import MODEL_SIDECAR

    key = META_PREFIX + SEAL_KEY
    if isinstance(model, Path):
        sidecar = model / MODEL_SIDECAR
        data = json.loads(sidecar.read_text())
        if data.pop(key, None) is None:
            raise ValueError(f"{sidecar} carries no seal: the test's premise is wrong")
        sidecar.write_text(json.dumps(data, indent=1) + "\n")
        return model
    kept = [p for p in model.metadata_props if p.key != key]
    if len(kept) == len(model.metadata_props):
        raise ValueError("the model carries no seal: the test's premise is wrong")
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return model


def make_onnx(
    path: Path,
    detections: list[tuple[int, float, tuple[float, float, float, float]]],
    imgsz: int = 64,
    names: tuple[str, ...] = ("smoke", "fire"),
    **metadata: object,
) -> Path:
    """A tiny ONNX model that always outputs ``detections`` (class, confidence, xyxy in letterboxed pixels), one
    anchor each, with wildfire_kd metadata as `export` writes it (``metadata`` overrides keys): a camera model for
    tests that need the runtime, not a network. Builds in milliseconds, no torch."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from wildfire_kd.edge.letterbox import INPUT_CONTRACT
    from wildfire_kd.edge.metadata import write_onnx

    rows = np.zeros((1, 4 + len(names), max(len(detections), 1)), dtype=np.float32)
    for i, (cls, conf, (x1, y1, x2, y2)) in enumerate(detections):
        rows[0, :4, i] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        rows[0, 4 + cls, i] = conf
    nodes = [  # output = constant + 0 * mean(input): the graph reads its input, the answer never changes
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["rows", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant-detections",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(rows.shape))],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]), onnx.numpy_helper.from_array(rows, "rows")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    write_onnx(model, {"names": list(names), "imgsz": [imgsz, imgsz], "input": INPUT_CONTRACT, "variant": "fp32",
                       **metadata})  # fmt: skip
    onnx.save(model, str(path))
    return path


def make_blob_onnx(path: Path, imgsz: int = 640, cell: int = 8, level: float = 0.6, **metadata: object) -> Path:
    """A tiny real detector, for tests of resolution: it finds red blobs. Each ``cell`` x ``cell`` block of the input
    is an anchor whose smoke score is high when the block's mean redness (R - (G + B) / 2, 0..1) exceeds ``level``:
    a blob must fill most of a block to be seen, as a real detector needs pixels. Boxes are the blocks."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from wildfire_kd.edge.letterbox import INPUT_CONTRACT
    from wildfire_kd.edge.metadata import write_onnx

    side = imgsz // cell
    ys, xs = np.mgrid[0:side, 0:side]
    boxes = np.stack([(xs + 0.5) * cell, (ys + 0.5) * cell, np.full_like(xs, cell), np.full_like(ys, cell)])
    boxes = boxes.reshape(1, 4, side * side).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["images", "redness"], ["red"]),  # 1 x 1 x S x S
        helper.make_node("AveragePool", ["red"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Sub", ["pooled", "level"], ["above"]),
        helper.make_node("Mul", ["above", "steep"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
        helper.make_node("Reshape", ["score", "flat"], ["scores"]),  # 1 x 1 x A
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array([1.0, -0.5, -0.5], np.float32).reshape(1, 3, 1, 1), "redness"),
        onnx.numpy_helper.from_array(np.array(level, np.float32), "level"),
        onnx.numpy_helper.from_array(np.array(30.0, np.float32), "steep"),
        onnx.numpy_helper.from_array(np.array([1, 1, side * side], np.int64), "flat"),
        onnx.numpy_helper.from_array(boxes, "boxes"),
    ]
    graph = helper.make_graph(
        nodes,
        "red-blobs",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, side * side])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    write_onnx(model, {"names": ["smoke"], "imgsz": [imgsz, imgsz], "input": INPUT_CONTRACT, "variant": "fp32",
                       **metadata})  # fmt: skip
    onnx.save(model, str(path))
    return path
