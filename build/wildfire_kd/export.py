"""The `export` stage: the student as an ONNX file the cameras can trust, and its fp16 / int8 variants.

ultralytics traces the graph (fp32, CPU, no simplification); we then simplify with the pinned onnxslim and
treat a simplifier failure as a failed export, write metadata as JSON values, and run ``onnx.checker``.
The variants keep the box-decoding tail (DFL, the anchor/stride scaling, the final concat and the score
sigmoid) in fp32: one int8 scale spanning box pixels (0..640) and class probabilities (0..1) would round
every score to zero, which is what makes naive int8 YOLO exports collapse.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, formats
from .config import ExportSettings
from .data import dataset_folders, mirror, split_images
from .edge import metadata as onnx_metadata
from .edge.letterbox import INPUT_CONTRACT, letterbox
from .errors import InputError, StageFailure
from .guard import refuse_overwriting_inputs
from .layout import (
    EXPORT_DIR,
    EXPORT_REPORT,
    MODEL_FOLDERS,
    ONNX_FILES,
    RUN_CONFIG,
    VALIDATION_DIR,
    VALIDATION_JSON,
    WEIGHTS_DIR,
)
from .onnx_files import save_checked, traced_graph
from .reports import git_commit, package_versions, write_json
from .textfiles import read_yaml
from .ultralytics_env import prepare_ultralytics
from .weights import CheckedWeights, check_weights, load_checked, model_class_names, sha256_file

log = logging.getLogger("wildfire_kd")


@dataclass
class ModelFile:
    """One exported model: an ONNX file, or an OpenVINO / NCNN folder (its sha256 over its files)."""

    variant: str  # fp32, fp16, bf16, int8
    path: str
    sha256: str
    size_mb: float
    opset: int | None = None  # ONNX only
    ir_version: int | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    float_tail_nodes: int = 0  # nodes of the decode tail kept in fp32 (0 for fp32 itself)
    format: str = "onnx"  # onnx, openvino, ncnn


@dataclass
class ExportResult:
    out_dir: str
    weights: str
    imgsz: int
    files: list[ModelFile] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def file(self, variant: str) -> ModelFile:
        return next(f for f in self.files if f.variant == variant)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_context(
    weights: str | Path, validation_report: str | Path | None = None, teacher_sha256: str | None = None
) -> dict[str, Any]:
    """What the training run beside ``weights`` says about it: teacher, KD settings, validation figures and the
    operating point (from ``validation_report``, else RUN/validation/validation.json). ``teacher_sha256``: the
    teacher's digest when the caller already has it (else the run's pin, else the file is hashed)."""
    from .validate.result import ValidationResult

    run = Path(weights).resolve().parent.parent
    context: dict[str, Any] = {
        "teacher_sha256": None,
        "distillation": None,
        "validation": None,
        "operating_point": None,
        "alarm": None,
        "camera_profile": None,
    }
    config = run / RUN_CONFIG
    if config.is_file():
        saved = read_yaml(config, "the run's own config (written by `wildfire-kd train`)") or {}
        train, distill = saved.get("train", {}), saved.get("distill")
        context["distillation"] = distill
        teacher = train.get("teacher")
        if teacher_sha256 or train.get("teacher_sha256"):
            context["teacher_sha256"] = teacher_sha256 or train["teacher_sha256"]
        elif teacher and Path(teacher).is_file():
            context["teacher_sha256"] = sha256_file(teacher)
    report = Path(validation_report) if validation_report else run / VALIDATION_DIR / VALIDATION_JSON
    if report.is_file():
        v = ValidationResult.load(report)
        context["validation"] = {
            "passed": v.passed,
            "teacher": {k: getattr(v.teacher, k) for k in ("precision", "recall", "map50", "map50_95")},
            "student": {k: getattr(v.student, k) for k in ("precision", "recall", "map50", "map50_95")},
            "retention": v.retention,
            "teacher_agreement": v.teacher_agreement,
            "split": v.data["split"],
        }
        context["operating_point"] = v.shipped_operating_point
        context["alarm"] = v.alarm_rule
        context["camera_profile"] = v.camera_profile
    return context


def decode_tail(graph) -> list[str]:
    """Names of the nodes after the last feature convolutions of the detection head (the box-decoding tail).

    A head convolution is a Conv with no other feature Conv downstream of it; the DFL Conv (a fixed
    1 x reg_max x 1 x 1 projection) belongs to the tail. Everything downstream of a head convolution is tail.
    """
    weights = {init.name: list(init.dims) for init in graph.initializer}

    def is_dfl(node) -> bool:
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        return "dfl" in node.name.lower() or (w is not None and w[0] == 1 and w[2:] == [1, 1])

    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    conv_downstream: dict[str, bool] = {}
    for node in reversed(graph.node):  # ONNX graphs are topologically sorted
        conv_downstream[node.name] = any(
            (c.op_type == "Conv" and not is_dfl(c)) or conv_downstream.get(c.name, False)
            for out in node.output
            for c in consumers.get(out, [])
        )
    heads = [n for n in graph.node if n.op_type == "Conv" and not is_dfl(n) and not conv_downstream[n.name]]
    tail: dict[str, None] = {}
    frontier = [out for n in heads for out in n.output]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.name not in tail:
                tail[node.name] = None
                frontier.extend(node.output)
    return list(tail)


def _io(values) -> list[dict[str, Any]]:
    import onnx

    out = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        out.append({"name": v.name, "shape": shape, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower()})
    return out


def file_key(exported: dict[str, Any]) -> str:
    """How an exported model is named in the parity results: its variant for ONNX, else '<format> <variant>'."""
    fmt = exported.get("format", "onnx")
    return exported["variant"] if fmt == "onnx" else f"{fmt} {exported['variant']}"


def _describe_folder(folder: Path, fmt: str, variant: str) -> ModelFile:
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return ModelFile(variant, str(folder), formats.folder_digest(folder), round(size / 2**20, 3), format=fmt)


def _describe(path: Path, variant: str, tail: int) -> ModelFile:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return ModelFile(
        variant=variant,
        path=str(path),
        sha256=sha256_file(path),
        size_mb=round(path.stat().st_size / 2**20, 3),
        opset=next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        ir_version=model.ir_version,
        inputs=_io(model.graph.input),
        outputs=_io(model.graph.output),
        float_tail_nodes=tail,
    )


class _Calibration:
    """onnxruntime CalibrationDataReader over letterboxed val images."""

    def __init__(self, images: list[Path], imgsz: int, input_name: str):
        self.images, self.imgsz, self.input_name = iter(images), imgsz, input_name

    def get_next(self):
        import cv2

        for path in self.images:
            frame = cv2.imread(str(path))
            if frame is not None:
                return {self.input_name: letterbox(frame, self.imgsz)[0]}
        return None


def quantized_nodes(graph) -> int:
    """QuantizeLinear / DequantizeLinear nodes of a graph: what makes a QDQ file int8 at all."""
    return sum(1 for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))


def check_int8_op_types(op_types: list[str]) -> None:
    """export.int8_op_types must name ONNX operators (case matters: 'Conv', not 'conv'); exit 2 naming the near
    ones and the usual choices."""
    import difflib

    import onnx.defs

    unknown = [op for op in op_types if not onnx.defs.has(op)]
    if not unknown:
        return
    names = sorted({schema.name for schema in onnx.defs.get_all_schemas()})
    near = {op: difflib.get_close_matches(op, names, n=1) or difflib.get_close_matches(op.capitalize(), names, n=1)
            for op in unknown}  # fmt: skip
    hints = ", ".join(f"{op!r} (did you mean {near[op][0]!r}?)" if near[op] else repr(op) for op in unknown)
    raise InputError(
        f"export.int8_op_types names no ONNX operator: {hints}; valid op types include "
        f"{', '.join(ExportSettings.model_fields['int8_op_types'].default)} (the default) and the rest of the "
        "ONNX operator set"
    )


def _toposort(graph) -> None:
    """Reorder nodes so each one follows the producers of its inputs (the ONNX spec; the checker enforces it)."""
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in produced for i in n.input)]
        if not ready:
            raise StageFailure(f"graph has a cycle or a dangling input near node {pending[0].name!r}")
        for node in ready:
            produced.update(node.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _fp16(src: Path, dst: Path, tail: list[str], metadata: dict[str, Any]) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, node_block_list=tail)
    _toposort(model.graph)  # the converter appends its input casts at the end of the node list
    onnx_metadata.write_onnx(model, {**metadata, "variant": "fp16", "float_tail": True})
    save_checked(model, dst)


def _int8(
    src: Path,
    dst: Path,
    tail: list[str],
    metadata: dict[str, Any],
    images: list[Path],
    imgsz: int,
    settings: ExportSettings,
) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[settings.int8_calibration_method]
    with tempfile.TemporaryDirectory(prefix="wildfire-kd-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_optimization=True)
        input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        raw = Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(raw),
            _Calibration(images[: settings.int8_calibration_images], imgsz, input_name),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(settings.int8_op_types),
            nodes_to_exclude=tail,
            per_channel=True,
            activation_type=QuantType.QUInt8,  # u8 activations x s8 weights: the fast int8 kernels on x86
            weight_type=QuantType.QInt8,
            calibrate_method=method,
        )
        model = onnx.load(str(raw))
    quantized = quantized_nodes(model.graph)
    if not quantized:  # the metadata would say int8 over an fp32 graph
        present = sorted({n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node})
        raise InputError(
            f"int8 export quantized no node: none of export.int8_op_types {list(settings.int8_op_types)} is "
            f"quantized in this graph (its op types: {', '.join(present)}); set export.int8_op_types to some of them"
        )
    onnx_metadata.write_onnx(
        model,
        {
            **metadata,
            "variant": "int8",
            "float_tail": True,
            "int8_calibration": {
                "images": min(len(images), settings.int8_calibration_images),
                "method": settings.int8_calibration_method,
                "op_types": list(settings.int8_op_types),
            },
        },
    )
    save_checked(model, dst)


def default_out(weights: str | Path) -> Path:
    """Where `export` writes when no folder is given: RUN/export beside RUN/weights/, else runs/export."""
    weights = Path(weights)
    return weights.parent.parent / EXPORT_DIR if weights.parent.name == WEIGHTS_DIR else Path("runs/export")


def fp32_sibling(onnx_path: str | Path) -> Path | None:
    """The export's fp32 file beside an fp16/int8 file (what their mAP50 drop is measured against), if there."""
    sibling = Path(onnx_path).with_name(ONNX_FILES["fp32"])
    return sibling if sibling.is_file() and sibling.resolve() != Path(onnx_path).resolve() else None


def _metadata(model, student: CheckedWeights, imgsz: int, context: dict[str, Any]) -> dict[str, Any]:
    """What the ONNX file says about itself (wildfire_kd.* metadata): the contract a camera relies on."""
    names = model_class_names(model)
    return {
        "names": names,
        "imgsz": [imgsz, imgsz],
        "stride": int(model.stride.max()),
        "input": INPUT_CONTRACT,
        "output": {
            "name": "output0",
            "layout": f"1 x (4 + {len(names)}) x anchors",
            "boxes": "rows 0-3: cx, cy, w, h in pixels of the letterboxed input",
            "scores": "rows 4..: per-class sigmoid probabilities (no NMS in the graph)",
        },
        "student_sha256": student.sha256,
        "teacher_sha256": context["teacher_sha256"],
        "distillation": context["distillation"],
        "validation": context["validation"],
        "operating_point": context["operating_point"],  # the confidence threshold detect uses by default
        "alarm": context["alarm"],  # the alarm rule validate chose on camera sequences; detect's default
        "camera_profile": _profile_at(context["camera_profile"], imgsz),  # the input size and tiles it chose
        "version": __version__,
        "git_commit": git_commit(),
        "variant": "fp32",
    }


def _profile_at(profile: dict[str, Any] | None, imgsz: int) -> dict[str, Any] | None:
    """The camera profile validate chose, for a file exported at ``imgsz``: its tiles were chosen at its own size,
    so a file of another size (export.imgsz set apart from it) ships none, and the camera tiles automatically."""
    if profile is None or profile.get("imgsz") not in (None, imgsz):
        if profile is not None:
            log.warning("export at %d px: the camera profile chosen at %s px does not ship", imgsz, profile["imgsz"])
        return None
    return {**profile, "imgsz": imgsz}


def _checked_settings(
    model, settings: ExportSettings, imgsz: int | None, calibration: object, profile: dict[str, Any] | None = None
) -> int:
    """The input size to export at (given, configured, the chosen camera profile's, else as trained), after the
    settings' own checks."""
    trained_imgsz = int((model.args or {}).get("imgsz", 640)) if isinstance(model.args, dict) else 640
    imgsz = imgsz or settings.imgsz or (profile or {}).get("imgsz") or trained_imgsz
    if imgsz % 32:
        raise InputError(f"export imgsz {imgsz} is not a multiple of 32 (the model's largest stride)")
    if settings.int8 and not calibration:
        raise InputError("int8 export needs --data: its val images calibrate the activation ranges")
    if settings.int8:
        check_int8_op_types(list(settings.int8_op_types))
    return imgsz


def export(
    weights: str | Path | CheckedWeights,
    out: str | Path,
    settings: ExportSettings | None = None,
    *,
    imgsz: int | None = None,
    data: str | None = None,
    weights_sha256: str | None = None,
    allow_unsafe_weights: bool = False,
    validation_report: str | Path | None = None,
    teacher_sha256: str | None = None,
    calibration_images: list[Path] | None = None,
) -> ExportResult:
    """Export ``weights`` to ONNX into ``out`` (student.onnx, and the configured variants); writes export.json.

    ``weights``: a .pt file (checked here against ``weights_sha256``) or one already checked. ``teacher_sha256``,
    ``calibration_images``: the teacher's digest and the val images when the caller has them (else looked up)."""
    prepare_ultralytics()
    settings = settings or ExportSettings()
    student = (
        weights
        if isinstance(weights, CheckedWeights)
        else check_weights(weights, weights_sha256, "student", allow_unsafe_weights)
    )
    weights = Path(student.path)
    model = load_checked(student)
    context = run_context(weights, validation_report, teacher_sha256)
    imgsz = _checked_settings(model, settings, imgsz, data or calibration_images, context["camera_profile"])
    metadata = _metadata(model, student, imgsz, context)
    out = Path(out)
    owned = [out / EXPORT_REPORT] + [out / name for name in [*ONNX_FILES.values(), *MODEL_FOLDERS.values()]]
    refuse_overwriting_inputs(owned, [weights, data], "--out", datasets=dataset_folders(data) if data else ())
    formats.check_available(settings)
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out_dir=str(out), weights=str(weights), imgsz=imgsz, metadata=metadata)
    _onnx_files(result, student, settings, imgsz, data, calibration_images)
    _other_formats(result, student, settings, imgsz, data)
    report = {**result.to_dict(), "settings": settings.model_dump(), "versions": package_versions()}
    write_json(out / EXPORT_REPORT, report)
    return result


def _other_formats(result: ExportResult, student: CheckedWeights, settings: ExportSettings, imgsz: int, data) -> None:
    """OpenVINO and NCNN folders beside the ONNX files (export.formats), each variant with our metadata."""
    out, weights = Path(result.out_dir), Path(student.path)
    with tempfile.TemporaryDirectory(prefix="wildfire-kd-calibration-") as tmp:
        needs_data = settings.int8 and "openvino" in settings.formats
        mirrored = str(mirror(data, Path(tmp) / "dataset")) if needs_data else None
        for fmt in settings.formats[1:]:
            for variant in formats.variants(fmt, settings):
                if variant == "bf16":  # the fp32 IR itself, run in bf16: a copy with its own metadata
                    folder = formats.rerun_as(out, fmt, "fp32", variant, result.metadata)
                else:
                    args = (weights, fmt, variant, imgsz, out, result.metadata, student.full_unpickling, mirrored)
                    folder = formats.export_format(*args)
                result.files.append(_describe_folder(folder, fmt, variant))


def _onnx_files(result: ExportResult, student: CheckedWeights, settings, imgsz: int, data, calibration_images) -> None:
    """student.onnx and its fp16 / int8 variants, each checked by onnx.checker."""
    out, weights, metadata = Path(result.out_dir), Path(student.path), result.metadata
    graph = traced_graph(weights, settings, imgsz, student.full_unpickling)
    onnx_metadata.write_onnx(graph, metadata)
    fp32 = out / ONNX_FILES["fp32"]
    save_checked(graph, fp32)
    result.files.append(_describe(fp32, "fp32", 0))
    tail = decode_tail(graph.graph)
    if not tail:
        raise StageFailure(f"{fp32}: no detection-head decode tail found; cannot keep it in float for the variants")
    if settings.half:
        dst = out / ONNX_FILES["fp16"]
        _fp16(fp32, dst, tail, metadata)
        result.files.append(_describe(dst, "fp16", len(tail)))
    if settings.int8:
        dst = out / ONNX_FILES["int8"]
        images = calibration_images if calibration_images is not None else split_images(data, "val")
        _int8(fp32, dst, tail, metadata, images, imgsz, settings)
        result.files.append(_describe(dst, "int8", len(tail)))
