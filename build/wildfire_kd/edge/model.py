"""`CameraModel`: a model file from `wildfire-kd export`, checked and run the way a field camera runs it.

It opens the file, checks its `wildfire_kd.*` metadata (class names, imgsz, the input contract), letterboxes a frame
exactly as training did (letterbox.py), runs the network, decodes the output and applies class-aware NMS the way
ultralytics' predictor does (boxes.py), and returns detections in the frame's pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import metadata as meta
from .boxes import DEFAULT_CONF, DEFAULT_IOU, decode
from .letterbox import INPUT_CONTRACT, letterbox


@dataclass(frozen=True)
class Detection:
    class_id: int
    name: str
    confidence: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the frame's pixels

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "box": [round(v, 2) for v in self.box], "confidence": round(self.confidence, 5)}


class OnnxSession:
    """An ONNX file in onnxruntime (CPU): its metadata, input and output shapes, and one inference."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise InputError(f"{path} is not a loadable ONNX model: {str(e).splitlines()[0]}") from None
        self.metadata = meta.decode(self.session.get_modelmeta().custom_metadata_map, path)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = list(model_input.shape)
        self.output_shape = list(self.session.get_outputs()[0].shape)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The raw output for one letterboxed 1x3xSxS tensor: (4 + nc, anchors)."""
        return self.session.run(None, {self.input_name: tensor})[0][0]


def _readable(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a model file: pass the .onnx file `wildfire-kd export` wrote")
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise InputError(f"model file not found: {path}") from None
    except OSError as e:
        raise InputError(f"model file {path} cannot be read ({e.strerror}); check its permissions") from None


class CameraModel:
    """A model file with its metadata checked: ``detect(frame)`` gives the frame's detections."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        _readable(self.path)
        self.runtime = OnnxSession(self.path, threads)
        self.metadata = self.runtime.metadata
        self._check()

    def _check(self) -> None:
        metadata, path = self.metadata, self.path
        missing = [k for k in ("names", "imgsz", "input") if k not in metadata]
        if missing:
            raise InputError(
                f"{path} has no wildfire_kd metadata ({', '.join(missing)} missing): not made by "
                "`wildfire-kd export`, so its classes and input contract are unknown; export it again"
            )
        if metadata["input"] != INPUT_CONTRACT:
            raise InputError(
                f"{path} expects another input contract ({metadata['input']}) than this runtime feeds "
                f"({INPUT_CONTRACT}); use the wildfire-kd version that exported it"
            )
        self.names: list[str] = meta.names_of(metadata, path)
        self.imgsz = meta.imgsz_of(metadata, path)
        dims = self.runtime.input_shape
        if len(dims) != 4 or any(isinstance(d, int) and d != self.imgsz for d in dims[2:]):
            raise InputError(
                f"{path}: its input {dims} does not take the {self.imgsz}x{self.imgsz} frames its "
                "metadata names; export it again"
            )
        outputs = self.runtime.output_shape
        if len(outputs) != 3 or (isinstance(outputs[1], int) and outputs[1] != 4 + len(self.names)):
            raise InputError(f"{path}: output {outputs} does not hold 4 + {len(self.names)} rows per anchor")
        self.operating_point: dict[str, Any] | None = metadata.get("operating_point")

    @property
    def default_conf(self) -> float:
        """The confidence threshold shipped with the model (validate's operating point), else 0.25."""
        return float(self.operating_point["conf"]) if self.operating_point else DEFAULT_CONF

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The raw output for one letterboxed 1x3xSxS tensor: (4 + nc, anchors)."""
        return self.runtime.infer(tensor)

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
