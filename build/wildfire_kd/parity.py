"""The `parity` stage: does the runtime a camera runs give the same answers as PyTorch?

The same letterboxed tensors (real val images plus seeded random tensors) go to the fused PyTorch student
(eval, fp32, CPU) and to the model file in the session the camera opens (edge/runtimes.py: onnxruntime's
CPUExecutionProvider, OpenVINO or NCNN on the CPU). Checks, in order, collecting
every failure before judging: the model's metadata against the weights; output0 split into box coordinates
and class scores, each with its own absolute tolerance (max / mean / p99 of absolute and relative
differences are reported); then detection-level parity after the camera runtime's own decoding and NMS
(edge/boxes.py) on both sides, so what parity approves is what the cameras compute. fp16 files use
their own bounds; an int8 file is judged by its mAP50 drop against the fp32 model on the val split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ParitySettings, VariantTolerances
from .data import dataset_folders, split_images
from .edge import metadata as onnx_metadata
from .edge.boxes import box_iou, decode
from .edge.letterbox import letterbox
from .errors import InputError
from .export import fp32_sibling, quantized_nodes
from .guard import refuse_overwriting_inputs
from .layout import MODEL_SIDECAR, parity_report
from .reports import package_versions, write_json
from .ultralytics_env import prepare_ultralytics
from .weights import CheckedWeights, check_weights, load_checked, model_class_names


@dataclass
class TensorDiff:
    name: str
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    p99_rel: float
    atol: float | None  # None: reported, not judged (int8)
    passed: bool
    compared: int = 0  # values compared (boxes: only anchors where a detection could arise, in fp16/int8)

    def line(self) -> str:
        mark = "✓" if self.passed else "✗"
        bound = f" (atol {self.atol:g})" if self.atol is not None else " (not judged)"
        return (
            f"{mark} {self.name}: max |Δ| {self.max_abs:.3g}, mean {self.mean_abs:.3g}, p99 {self.p99_abs:.3g}; "
            f"max rel {self.max_rel:.3g}, p99 rel {self.p99_rel:.3g}{bound}"
        )


@dataclass
class DetectionParity:
    torch_detections: int
    onnx_detections: int
    matched: int
    unmatched: int  # on either side, borderline ones excluded
    # unmatched, but at an NMS threshold, where a rounding error decides: its confidence within det_conf_atol of the
    # NMS confidence, or its overlap with a stronger box of its class within parity.nms_iou_tie of the NMS IoU
    borderline: int
    min_iou: float | None
    max_conf_diff: float | None
    iou_bound: float | None
    conf_bound: float | None
    passed: bool

    def problem(self) -> str:
        return (
            f"{self.unmatched} detection(s) without a match (IoU >= {self.iou_bound}, |Δconf| <= {self.conf_bound}, "
            "same class)"
        )

    def line(self) -> str:
        mark = "✓" if self.passed else "✗"
        return (
            f"{mark} detections: {self.matched}/{self.torch_detections} matched (onnx {self.onnx_detections}, "
            f"unmatched {self.unmatched}, borderline {self.borderline}), min IoU {_f(self.min_iou)}, "
            f"max |Δconf| {_f(self.max_conf_diff)}"
        )


@dataclass
class ParityResult:
    onnx: str
    variant: str
    imgsz: int
    passed: bool
    problems: list[str]
    tensors: list[TensorDiff]
    detections: DetectionParity
    inputs: dict[str, int]
    map50: dict[str, float] = field(default_factory=dict)
    report: str | None = None
    format: str = "onnx"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def load_onnx(onnx_path: str | Path):
    """The ONNX model, after checking it exists and passes the checker (else InputError: exit 2)."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise InputError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as e:
        raise InputError(f"{path} is not a valid ONNX model (truncated or corrupt?): {str(e).splitlines()[0]}") from e
    return model


def _inputs(
    data: str | None, settings: ParitySettings, imgsz: int, images: list[Path] | None = None
) -> tuple[list[np.ndarray], dict[str, int]]:
    """The compared tensors: the first ``parity.images`` val images (``images``: the val split as the preflight
    listed it, else listed here), then seeded random tensors."""
    import cv2

    tensors = []
    if data and settings.images:
        for path in (images if images is not None else split_images(data, "val"))[: settings.images]:
            frame = cv2.imread(str(path))
            if frame is None:
                raise InputError(f"{path}: cannot be decoded as an image")
            tensors.append(letterbox(frame, imgsz)[0])
    real = len(tensors)
    rng = np.random.default_rng(settings.seed)
    tensors += [rng.random((1, 3, imgsz, imgsz), dtype=np.float32) for _ in range(settings.random_tensors)]
    if not tensors:
        raise InputError("parity has nothing to compare: pass --data for real images or set parity.random_tensors")
    return tensors, {"images": real, "random": len(tensors) - real}


def _diff(name: str, ref: np.ndarray, got: np.ndarray, atol: float | None) -> TensorDiff:
    abs_d = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    rel_d = abs_d / np.maximum(np.abs(ref), 1e-6)
    return TensorDiff(
        name=name,
        max_abs=float(abs_d.max()),
        mean_abs=float(abs_d.mean()),
        p99_abs=float(np.percentile(abs_d, 99)),
        max_rel=float(rel_d.max()),
        mean_rel=float(rel_d.mean()),
        p99_rel=float(np.percentile(rel_d, 99)),
        atol=atol,
        passed=atol is None or bool(abs_d.max() <= atol),
        compared=int(abs_d.size),
    )


def _detections(output: np.ndarray, settings: ParitySettings) -> np.ndarray:
    """One image's output through the camera runtime's decoding and NMS -> (N, 6): xyxy, conf, class."""
    boxes, scores, classes = decode(output, settings.nms_conf, settings.nms_iou)
    return np.concatenate([boxes, scores[:, None], classes[:, None].astype(np.float32)], axis=1)


def _nms_ties(dets: np.ndarray, settings: ParitySettings) -> np.ndarray:
    """Per detection: does it survive NMS by a tie? Its overlap with a stronger box of its class is within
    ``settings.nms_iou_tie`` of the NMS IoU threshold, so a box that moves by a rounding error on the other side
    suppresses it there (or lets through a box this side suppressed)."""
    if len(dets) < 2:
        return np.zeros(len(dets), dtype=bool)
    iou = box_iou(dets[:, :4], dets[:, :4])
    stronger = (dets[None, :, 4] > dets[:, None, 4]) & (dets[None, :, 5] == dets[:, None, 5])
    closest = np.where(stronger, iou, 0.0).max(1)
    return closest >= settings.nms_iou - settings.nms_iou_tie


def _match(ref, got, settings: ParitySettings, iou_bound: float, conf_bound: float):
    """Greedy one-to-one matching of two images' detections by class, best IoU first. An unmatched detection is
    borderline, not a difference, when it sits at an NMS threshold: its confidence within ``conf_bound`` of the
    NMS confidence, or its overlap with a stronger box at the NMS IoU (``_nms_ties``)."""
    stats = {"matched": 0, "unmatched": 0, "borderline": 0, "ious": [], "confs": []}
    ref_ties, got_ties = _nms_ties(ref, settings), _nms_ties(got, settings)
    used = set()
    iou = box_iou(ref[:, :4], got[:, :4]) if len(ref) and len(got) else None
    for i in np.argsort(-ref[:, 4], kind="stable").tolist():
        best, best_iou = None, iou_bound
        for j in range(len(got)):
            if j in used or got[j, 5] != ref[i, 5]:
                continue
            if iou[i, j] >= best_iou and abs(float(got[j, 4] - ref[i, 4])) <= conf_bound:
                best, best_iou = j, float(iou[i, j])
        if best is None:
            tie = ref_ties[i] or float(ref[i, 4]) < settings.nms_conf + conf_bound
            stats["borderline" if tie else "unmatched"] += 1
            continue
        used.add(best)
        stats["matched"] += 1
        stats["ious"].append(best_iou)
        stats["confs"].append(abs(float(got[best, 4] - ref[i, 4])))
    for j in range(len(got)):
        if j not in used:
            tie = got_ties[j] or float(got[j, 4]) < settings.nms_conf + conf_bound
            stats["borderline" if tie else "unmatched"] += 1
    return stats


def onnx_map50(onnx_path: str | Path, data: str, imgsz: int, batch: int = 1, info=None) -> float:
    """mAP50 of an ONNX file on the val split through ultralytics' validator (on a mirror of the dataset;
    ``info``: its preflight, whose listing the mirror uses)."""
    import tempfile

    from ultralytics import YOLO

    from .data import mirror

    with tempfile.TemporaryDirectory(prefix="wildfire-kd-parity-") as tmp:
        metrics = YOLO(str(onnx_path), task="detect").val(
            data=str(mirror(data, Path(tmp) / "dataset", info)),
            imgsz=imgsz,
            batch=batch,
            device="cpu",
            plots=False,
            verbose=False,
            rect=False,
            project=tmp,
            name="val",
        )
    return float(metrics.box.map50)


def _metadata_problems(meta: dict[str, Any], names: list[str], imgsz: int, student: CheckedWeights) -> list[str]:
    """The ONNX file's wildfire_kd metadata against the weights it claims to be."""
    problems = []
    if meta.get("names") != names:
        problems.append(f"metadata names {meta.get('names')} differ from the weights' {names}")
    if meta.get("imgsz") != [imgsz, imgsz]:
        problems.append(f"metadata imgsz {meta.get('imgsz')} differs from the compared size {imgsz}")
    if meta.get("student_sha256") not in (None, student.sha256):
        problems.append(f"metadata student_sha256 {meta.get('student_sha256')} is not the sha256 of {student.path}")
    return problems


def _run_both(model, infer, tensors: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """output0 of the fused fp32 PyTorch model and of the model under test (``infer``) for each tensor, stacked."""
    import torch

    fused = model.fuse(verbose=False).float().eval()
    ref_out, got_out = [], []
    with torch.inference_mode():
        for x in tensors:
            ref_out.append(fused(torch.from_numpy(x))[0].numpy())
            got_out.append(infer(x))
    return np.concatenate(ref_out), np.concatenate(got_out)


@dataclass
class _UnderTest:
    """The model file or folder parity checks: its format, metadata, input size, and one inference."""

    fmt: str
    metadata: dict[str, Any]
    imgsz: int
    infer: Any  # letterboxed 1x3xSxS -> output0 (1 x (4 + nc) x anchors)
    problems: list[str]  # what its form alone shows (an int8 file without quantized nodes)


def _open(path: Path, imgsz: int | None) -> _UnderTest:
    """The model file or folder in the session the camera opens (edge/runtimes.py), after the checks of its form: an
    ONNX file passes onnx.checker (and an int8 one has quantized nodes), a folder holds our metadata."""
    from .edge.runtimes import open_session

    problems = []
    if path.suffix == ".onnx":
        model = load_onnx(path)
        if onnx_metadata.read_onnx(model, path).get("variant") == "int8" and not quantized_nodes(model.graph):
            problems.append(f"{path}: its metadata says int8 but the graph has no QuantizeLinear/DequantizeLinear node")
    elif not path.exists():
        raise InputError(f"model not found: {path}")
    session = open_session(path)
    if path.suffix != ".onnx" and "imgsz" not in session.metadata:
        raise InputError(f"{path} has no wildfire_kd metadata in its {MODEL_SIDECAR}: export it with wildfire-kd")
    imgsz = imgsz or _metadata_imgsz(session.metadata, path)  # the size to compare at when --imgsz is not given
    dims = session.input_shape
    if len(dims) != 4 or any(isinstance(d, int) and d != imgsz for d in dims[2:]):
        raise InputError(
            f"{path}: input shape {dims} does not take {imgsz}x{imgsz} images "
            f"(export again with --imgsz {imgsz}, or pass --imgsz {dims[2] if len(dims) == 4 else '?'})"
        )
    return _UnderTest(session.runtime, session.metadata, imgsz, lambda x: session.infer(x)[None], problems)


def compare_tensors(ref: np.ndarray, got: np.ndarray, tol: VariantTolerances) -> list[TensorDiff]:
    """Box coordinates and class scores of output0, each against its own bound. Boxes count only at anchors whose
    best score reaches ``tol.box_min_score`` (all of them if none does)."""
    scored = ref[:, 4:].max(1) >= tol.box_min_score  # (images, anchors)
    ref_boxes, got_boxes = ref[:, :4].transpose(0, 2, 1)[scored], got[:, :4].transpose(0, 2, 1)[scored]
    if not len(ref_boxes):  # nothing scores high enough anywhere: compare every anchor rather than none
        ref_boxes, got_boxes = ref[:, :4], got[:, :4]
    return [_diff("boxes", ref_boxes, got_boxes, tol.box_atol), _diff("scores", ref[:, 4:], got[:, 4:], tol.score_atol)]


def compare_detections(
    ref: np.ndarray, got: np.ndarray, settings: ParitySettings, tol: VariantTolerances, judged: bool = True
) -> DetectionParity:
    """Both outputs through the camera runtime's decoding and NMS (edge/boxes.py), so parity and the cameras never
    drift apart; then one-to-one matching per image. Without bounds (int8) it reports with IoU 0.5, any conf."""
    iou_bound, conf_bound = tol.det_iou, tol.det_conf_atol
    ref_det = [_detections(out, settings) for out in ref]
    got_det = [_detections(out, settings) for out in got]
    totals = {"matched": 0, "unmatched": 0, "borderline": 0, "ious": [], "confs": []}
    for r, g in zip(ref_det, got_det, strict=True):
        stats = _match(r, g, settings, iou_bound or 0.5, conf_bound if conf_bound is not None else 1.0)
        for key, value in stats.items():
            totals[key] += value
    return DetectionParity(
        torch_detections=sum(len(d) for d in ref_det),
        onnx_detections=sum(len(d) for d in got_det),
        matched=totals["matched"],
        unmatched=totals["unmatched"],
        borderline=totals["borderline"],
        min_iou=min(totals["ious"]) if totals["ious"] else None,
        max_conf_diff=max(totals["confs"]) if totals["confs"] else None,
        iou_bound=iou_bound,
        conf_bound=conf_bound,
        passed=not judged or totals["unmatched"] == 0,
    )


def map50_drop(
    onnx_path: str | Path,
    fp32_onnx: str | Path | None,
    data: str | None,
    imgsz: int,
    variant: str,
    max_drop: float,
    info=None,
    known: dict[str, float] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """mAP50 of the variant and of the fp32 ONNX file on the val split, and a problem if it drops more than allowed.
    ``known``: mAP50 already measured, by file path (a build scores its fp32 file once for all its variants)."""
    if not (data and fp32_onnx):
        raise InputError(f"{variant} parity needs --data and the fp32 ONNX file (--fp32-onnx) for the mAP50 drop")
    known = {} if known is None else known
    for path in (fp32_onnx, onnx_path):
        if str(path) not in known:
            known[str(path)] = onnx_map50(path, data, imgsz, info=info)
    map50 = {"fp32": known[str(fp32_onnx)], variant: known[str(onnx_path)]}
    map50["drop"] = map50["fp32"] - map50[variant]
    if map50["drop"] <= max_drop:
        return map50, []
    return map50, [
        f"{variant} mAP50 drop {map50['drop']:.4f} > {max_drop} (fp32 {map50['fp32']:.4f}, {variant} "
        f"{map50[variant]:.4f})"
    ]


def _refuse_overwriting(report: Path, given: list, data: str | None) -> None:
    datasets = dataset_folders(data) if data else ()
    refuse_overwriting_inputs([report], [*given, data], "--out", datasets=datasets)


def _metadata_imgsz(meta: dict[str, Any], onnx_path: str | Path) -> int:
    if "imgsz" not in meta:
        raise InputError(f"{onnx_path} has no wildfire_kd.imgsz metadata: pass --imgsz")
    return onnx_metadata.imgsz_of(meta, onnx_path)


def parity(
    weights: str | Path | CheckedWeights,
    onnx_path: str | Path,
    settings: ParitySettings,
    *,
    data: str | None = None,
    imgsz: int | None = None,
    out: str | Path | None = None,
    fp32_onnx: str | Path | None = None,
    weights_sha256: str | None = None,
    allow_unsafe_weights: bool = False,
    info=None,
    known_map50: dict[str, float] | None = None,
) -> ParityResult:
    """Compare ``onnx_path`` with ``weights``; writes parity.json (or parity_<variant>.json) into ``out``.

    ``weights``: a .pt file (checked against ``weights_sha256``) or one already checked; ``fp32_onnx``: what an
    fp16/int8 file's mAP50 is compared with (default: ``student.onnx`` beside it); ``info``, ``known_map50``: the
    data's preflight and mAP50s already measured, when the caller has them."""
    prepare_ultralytics()
    pin = (weights_sha256, "student", allow_unsafe_weights)
    student = weights if isinstance(weights, CheckedWeights) else check_weights(weights, *pin)
    model = load_checked(student)
    path = Path(onnx_path)
    tested = _open(path, imgsz)
    meta, imgsz = tested.metadata, tested.imgsz
    variant, fmt = meta.get("variant", "fp32"), "onnx" if tested.fmt == "onnxruntime" else tested.fmt
    if out is not None:
        _refuse_overwriting(Path(out) / parity_report(variant, fmt), [student.path, onnx_path, fp32_onnx], data)
    tol = settings.for_variant(variant, fmt)
    problems = _metadata_problems(meta, model_class_names(model), imgsz, student) + tested.problems

    tensors, counts = _inputs(data, settings, imgsz, info.images("val") if info and "val" in info.files else None)
    ref, got = _run_both(model, tested.infer, tensors)
    if ref.shape != got.shape:
        raise InputError(f"{onnx_path}: output shape {got.shape} differs from the PyTorch model's {ref.shape}")
    diffs = compare_tensors(ref, got, tol)
    detections = compare_detections(ref, got, settings, tol, judged=variant != "int8")
    problems += [f"{d.name} max |Δ| {d.max_abs:.3g} > atol {d.atol:g}" for d in diffs if not d.passed]
    problems += [] if detections.passed else [detections.problem()]
    map50: dict[str, float] = {}
    if tol.max_map50_drop is not None:
        fp32_onnx = fp32_onnx or fp32_sibling(onnx_path)
        map50, drop_problems = map50_drop(
            onnx_path, fp32_onnx, data, imgsz, variant, tol.max_map50_drop, info, known_map50
        )
        problems += drop_problems

    result = ParityResult(str(onnx_path), variant, imgsz, not problems, problems, diffs, detections, counts, map50)
    result.format = fmt
    if out is not None:
        result.report = str(Path(out) / parity_report(variant, fmt))
        extra = {"weights": str(student.path), "settings": settings.model_dump(), "versions": package_versions()}
        write_json(result.report, {**result.to_dict(), **extra})
    return result
