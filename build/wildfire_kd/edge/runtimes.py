"""The runtimes a camera can run a model file in: onnxruntime, OpenVINO, NCNN. Each gives the same thing: the file's
metadata, its input and output shapes, and the raw output (4 + nc, anchors) of one letterboxed frame.

Which runtime is decided from what is given (or named): a ``.onnx`` file -> onnxruntime; an OpenVINO IR (``.xml``, or
a folder holding one) -> OpenVINO; a folder holding ``*.param`` and ``*.bin`` -> NCNN. Each imports its own package
only when used, so a camera installs just the one it runs (requirements-<runtime>.txt). Our metadata lives in the
ONNX file's properties, and for the folders in ``metadata.yaml`` (ultralytics' sidecar, which export writes as JSON).
The precision a file asks for is honoured: OpenVINO on a CPU with BF16 would otherwise run an fp32 file in bf16.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..layout import MODEL_SIDECAR
from . import metadata as meta

RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn"}  # runtime -> its pip package
# the pipeline's extras that bring a runtime (onnxruntime is a core dependency): pip install 'wildfire-kd[extra]'
EXTRAS = {"openvino": "openvino", "ncnn": "ncnn"}


def _import(runtime: str):
    import importlib

    try:
        return importlib.import_module(RUNTIMES[runtime])
    except ImportError:
        extra = f"'wildfire-kd[{EXTRAS[runtime]}]', or " if runtime in EXTRAS else ""
        raise InputError(
            f"the model needs the {runtime} runtime, which is not installed: pip install {RUNTIMES[runtime]} "
            f"(or {extra}an edge image for it: wildfire-kd image build --target edge --runtime {runtime})"
        ) from None


def runtime_of(path: Path) -> str:
    """The runtime a model file or folder is for, from what it is."""
    if path.is_file() and path.suffix == ".onnx":
        return "onnxruntime"
    if (path.is_file() and path.suffix == ".xml") or (path.is_dir() and any(path.glob("*.xml"))):
        return "openvino"
    if path.is_dir() and any(path.glob("*.param")) and any(path.glob("*.bin")):
        return "ncnn"
    raise InputError(
        f"{path} is not a model the camera runtime knows: a .onnx file, an OpenVINO IR (.xml, or its folder) or an "
        "NCNN folder (.param and .bin), as `wildfire-kd export` writes them"
    )


def _sidecar_metadata(folder: Path) -> dict[str, Any]:
    """Our keys of a model folder's metadata.yaml (JSON text, which YAML readers read too); none if it has no
    metadata or not ours."""
    path = folder / MODEL_SIDECAR
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # ultralytics' own YAML: not exported by wildfire-kd
        return {}
    return meta.decode({k: v for k, v in raw.items() if isinstance(v, str)}, path) if isinstance(raw, dict) else {}


class OnnxSession:
    """An ONNX file in onnxruntime (CPU)."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None):
        ort = _import("onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise InputError(f"{path} is not a loadable ONNX model: {str(e).splitlines()[0]}") from None
        self.metadata = meta.decode(self.session.get_modelmeta().custom_metadata_map, path)
        self.sealed = meta.check_seal(self.metadata, path, path)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = list(model_input.shape)
        self.output_shape = list(self.session.get_outputs()[0].shape)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: tensor})[0][0]


# variant -> inference precision hint, "bf16" only where the CPU has it natively (elsewhere it would be emulated,
# slowly) else f32. int8 runs its unquantized layers so too, as ultralytics' validator does when parity measures the
# int8 file's mAP50 drop: 1.15-1.27x faster than in f32 on this CPU
OPENVINO_PRECISION = {"fp32": "f32", "fp16": "f32", "bf16": "bf16", "int8": "bf16"}


class OpenVinoSession:
    """An OpenVINO IR on the CPU, at the precision its variant names (fp32 files never silently in bf16)."""

    runtime = "openvino"

    def __init__(self, path: Path, threads: int | None = None):
        ov = _import("openvino")
        xml = path if path.is_file() else next(path.glob("*.xml"))
        self.metadata = _sidecar_metadata(xml.parent)
        self.sealed = meta.check_seal(self.metadata, xml.parent, xml.parent)
        core = ov.Core()
        try:
            model = core.read_model(model=str(xml), weights=str(xml.with_suffix(".bin")))
        except Exception as e:
            raise InputError(f"{xml} is not a loadable OpenVINO model: {str(e).splitlines()[0]}") from None
        hint = OPENVINO_PRECISION.get(str(self.metadata.get("variant", "fp32")), "f32")
        if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            hint = "f32"
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, device_name="CPU", config=config)
        self.input_shape = [d.get_length() if d.is_static else None for d in model.inputs[0].partial_shape]
        self.output_shape = [d.get_length() if d.is_static else None for d in model.outputs[0].partial_shape]
        self.request = self.compiled.create_infer_request()

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.request.infer([tensor])[self.compiled.output(0)][0]


class NcnnSession:
    """An NCNN model (.param and .bin) on the CPU; fp16 storage and arithmetic only when its variant is fp16."""

    runtime = "ncnn"

    def __init__(self, path: Path, threads: int | None = None):
        ncnn = _import("ncnn")
        self.ncnn, self.path = ncnn, path
        param = next(path.glob("*.param"))
        self.metadata = _sidecar_metadata(path)
        self.sealed = meta.check_seal(self.metadata, path, path)
        half = self.metadata.get("variant") == "fp16"
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.use_fp16_packed = self.net.opt.use_fp16_storage = self.net.opt.use_fp16_arithmetic = half
        if threads:
            self.net.opt.num_threads = threads
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(param.with_suffix(".bin"))) != 0:
            raise InputError(f"{path} is not a loadable NCNN model (its .param or .bin did not load)")
        imgsz = meta.imgsz_of(self.metadata, path) if "imgsz" in self.metadata else None
        self.input_shape = [1, 3, imgsz, imgsz]  # NCNN's param file does not state it: the metadata's
        self.output_shape = [1, None, None]
        self.input_name, self.output_name = self.net.input_names()[0], sorted(self.net.output_names())[0]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        with self.net.create_extractor() as ex:
            ex.input(self.input_name, self.ncnn.Mat(np.ascontiguousarray(tensor[0])))
            output = np.array(ex.extract(self.output_name)[1])
        expected = anchors_at(self.input_shape[2]) if self.input_shape[2] else None
        if expected is not None and output.shape[-1] != expected:  # NCNN runs any size: the metadata's must fit
            raise InputError(
                f"{self.path}: its metadata says {self.input_shape[2]} px ({expected} anchors) but the network gives "
                f"{output.shape[-1]} anchors: the metadata belongs to another model or was edited; export it again"
            )
        return output


def anchors_at(imgsz: int, strides: tuple[int, ...] = (8, 16, 32)) -> int:
    """The anchors a YOLOv8 head (P3-P5) gives for an ``imgsz`` x ``imgsz`` input."""
    return sum((imgsz // s) ** 2 for s in strides)


SESSIONS = {"onnxruntime": OnnxSession, "openvino": OpenVinoSession, "ncnn": NcnnSession}


def open_session(path: Path, runtime: str | None = None, threads: int | None = None):
    """The session for ``path`` in ``runtime`` (None: the runtime its form says)."""
    if runtime is not None and runtime not in SESSIONS:
        raise InputError(f"--runtime {runtime!r}: one of {', '.join(SESSIONS)}")
    found = runtime_of(path)
    if runtime not in (None, found):
        raise InputError(f"{path} is a model for {found}, not {runtime}: export it for {runtime} (export.formats)")
    return SESSIONS[found](path, threads)
