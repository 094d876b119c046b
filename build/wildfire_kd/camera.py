"""What a field camera runs: a student.onnx from `wildfire-kd export`, with numpy, onnxruntime and OpenCV only.

No torch, no ultralytics (a test imports this module with both blocked). `CameraModel` opens the file, checks its
`wildfire_kd.*` metadata (class names, imgsz, the input contract), letterboxes a frame exactly as training did
(`letterbox.py`), runs onnxruntime, decodes the output and applies class-aware NMS the way ultralytics' predictor
does (same thresholds, same class offset, same per-axis rescaling), and returns detections in the frame's
pixels. `Confirmer` turns per-frame detections of one camera into alarms: a detection must recur in k of the
last n frames, because single frames of haze, cloud and glare make most false alarms.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .letterbox import INPUT_CONTRACT, letterbox

META_PREFIX = "wildfire_kd."
DEFAULT_CONF = 0.25  # without an operating point in the file (ultralytics' predict default)
DEFAULT_IOU = 0.7  # NMS IoU (ultralytics' predict default)
MAX_DET = 300  # detections per frame at most
MAX_NMS = 30_000  # candidates into NMS at most
CLASS_OFFSET = 7680  # px added per class id so NMS never compares boxes of different classes (ultralytics' max_wh)
ALARM_K, ALARM_N, ALARM_IOU = 3, 5, 0.3  # an alarm: same-class overlap (IoU >= 0.3) in 3 of the last 5 frames


@dataclass(frozen=True)
class Detection:
    class_id: int
    name: str
    confidence: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the frame's pixels

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "box": [round(v, 2) for v in self.box], "confidence": round(self.confidence, 5)}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy -> (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS, highest score first, dropping boxes with IoU > threshold: kept indices in score order.

    OpenCV's C++ NMSBoxes does the suppression (a loop in numpy took 8x longer on the hundreds of candidates a
    confused frame produces). It orders equal scores its own way, so boxes go in already sorted (stable, as
    torchvision.ops.nms orders them) with strictly decreasing ranks for scores: the kept boxes are then
    torchvision's, ties included (tested).
    """
    import cv2

    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    ranked = boxes[order]
    rects = np.concatenate([ranked[:, :2], ranked[:, 2:] - ranked[:, :2]], axis=1)  # x, y, w, h
    ranks = np.arange(len(order), 0, -1, dtype=np.float32)  # exact in float32 up to 2**24 candidates
    kept = cv2.dnn.NMSBoxes(rects, ranks, 0.0, iou_threshold)
    return order[np.asarray(kept, dtype=np.int64).reshape(-1)]


def decode(output: np.ndarray, conf: float, iou: float, max_det: int = MAX_DET) -> tuple[np.ndarray, ...]:
    """One frame's output (4 + nc, anchors): cx, cy, w, h then per-class scores -> (xyxy, scores, class ids),
    best class per anchor above ``conf``, class-aware NMS, highest scores first (ultralytics' non_max_suppression)."""
    scores_all = output[4:].T  # (anchors, nc)
    class_ids = scores_all.argmax(1)
    scores = scores_all[np.arange(len(class_ids)), class_ids]
    keep = scores > conf
    cxcywh, scores, class_ids = output[:4].T[keep], scores[keep], class_ids[keep]
    if len(scores) > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        cxcywh, scores, class_ids = cxcywh[top], scores[top], class_ids[top]
    xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
    kept = nms(xyxy + class_ids[:, None] * CLASS_OFFSET, scores, iou)[:max_det]
    return xyxy[kept], scores[kept], class_ids[kept]


class CameraModel:
    """A student.onnx with its metadata checked: ``detect(frame)`` gives the frame's detections."""

    def __init__(self, onnx_path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        try:
            with open(self.path, "rb"):
                pass
        except FileNotFoundError:
            raise InputError(f"ONNX file not found: {self.path}") from None
        except OSError as e:
            raise InputError(f"ONNX file {self.path} cannot be read ({e.strerror}); check its permissions") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise InputError(f"{self.path} is not a loadable ONNX model: {str(e).splitlines()[0]}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k[len(META_PREFIX) :]: json.loads(v) for k, v in props.items() if k.startswith(META_PREFIX)}
        self._check()

    def _check(self) -> None:
        meta, path = self.metadata, self.path
        missing = [k for k in ("names", "imgsz", "input") if k not in meta]
        if missing:
            raise InputError(
                f"{path} has no wildfire_kd metadata ({', '.join(missing)} missing): not made by "
                "`wildfire-kd export`, so its classes and input contract are unknown; export it again"
            )
        if meta["input"] != INPUT_CONTRACT:
            raise InputError(
                f"{path} expects another input contract ({meta['input']}) than this runtime feeds "
                f"({INPUT_CONTRACT}); use the wildfire-kd version that exported it"
            )
        self.names: list[str] = list(meta["names"])
        self.imgsz = int(meta["imgsz"][0])
        model_input = self.session.get_inputs()[0]
        dims = list(model_input.shape)
        if len(dims) != 4 or any(isinstance(d, int) and d != self.imgsz for d in dims[2:]):
            raise InputError(
                f"{path}: its input {dims} does not take the {self.imgsz}x{self.imgsz} frames its "
                "metadata names; export it again"
            )
        self.input_name = model_input.name
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[1], int) and outputs[1] != 4 + len(self.names):
            raise InputError(f"{path}: output {outputs} does not hold 4 + {len(self.names)} rows per anchor")
        self.operating_point: dict[str, Any] | None = meta.get("operating_point")

    @property
    def default_conf(self) -> float:
        """The confidence threshold shipped with the model (validate's operating point), else 0.25."""
        return float(self.operating_point["conf"]) if self.operating_point else DEFAULT_CONF

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The raw output for one letterboxed 1x3xSxS tensor: (4 + nc, anchors)."""
        return self.session.run(None, {self.input_name: tensor})[0][0]

    def detect(self, frame_bgr: np.ndarray, conf: float | None = None, iou: float = DEFAULT_IOU) -> list[Detection]:
        """Detections in ``frame_bgr`` (HxWx3 uint8, as cv2.imread gives), in its pixel coordinates."""
        tensor, ratio, (left, top) = letterbox(frame_bgr, self.imgsz)
        xyxy, scores, class_ids = decode(self.infer(tensor), self.default_conf if conf is None else conf, iou)
        h, w = frame_bgr.shape[:2]
        # per-axis gains from the rounded resize, as ultralytics' scale_boxes does
        gain_x, gain_y = max(round(w * ratio), 1) / w, max(round(h * ratio), 1) / h
        xyxy = (xyxy - [left, top, left, top]) / [gain_x, gain_y, gain_x, gain_y]
        xyxy = np.clip(xyxy, 0, [w, h, w, h])
        return [
            Detection(int(c), self.names[int(c)], float(s), tuple(float(v) for v in box))
            for box, s, c in zip(xyxy, scores, class_ids, strict=True)
        ]


@dataclass
class Alarm:
    frame: str
    detection: Detection
    confirmed_by: list[str]  # the frames (this one included) with an overlapping detection of the same class

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, **self.detection.to_dict(), "confirmed_by": self.confirmed_by}


@dataclass
class Confirmer:
    """Temporal confirmation for one camera's frames in time order.

    A detection raises an alarm when detections of its class overlap it (IoU >= ``iou``) in at least ``k`` of the
    last ``n`` frames, this one included. An object already alarmed does not alarm again while it stays confirmed.
    Higher k or n: fewer false alarms from transient haze, glare or clouds, but a later first alarm.
    """

    k: int = ALARM_K
    n: int = ALARM_N
    iou: float = ALARM_IOU
    _window: deque = field(init=False, repr=False)
    _active: list[Detection] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise InputError(f"temporal confirmation needs 1 <= k <= n, got k={self.k}, n={self.n}")
        self._window = deque(maxlen=self.n)

    def _overlaps(self, d: Detection, others: list[Detection]) -> bool:
        same = [o.box for o in others if o.class_id == d.class_id]
        return bool(same) and bool((box_iou(np.array([d.box]), np.array(same)) >= self.iou).any())

    def update(self, frame: str, detections: list[Detection]) -> list[Alarm]:
        """Add the next frame; returns the alarms it raises."""
        self._window.append((frame, detections))
        alarms, confirmed = [], []
        for d in detections:
            support = [name for name, dets in self._window if self._overlaps(d, dets)]
            if len(support) < self.k:
                continue
            confirmed.append(d)
            if not self._overlaps(d, self._active):
                alarms.append(Alarm(frame, d, support))
        self._active = confirmed
        return alarms
