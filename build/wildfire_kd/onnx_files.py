"""ONNX files from a model: ultralytics' tracer, the pinned simplifier, the checker, an atomic write.

What `export` builds its files from and `validate` its temporary camera models (camera sequences) with.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .config import ExportSettings
from .errors import StageFailure
from .reports import atomic_file
from .weights import ultralytics_loading


def save_checked(model, path: Path) -> None:
    """Write ``model`` to ``path`` only if onnx.checker passes it (atomically: never half a file)."""
    import onnx

    with atomic_file(path) as tmp:
        onnx.save(model, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise StageFailure(f"{path.name}: onnx.checker rejected the model: {e}") from e


def traced_graph(weights: Path, settings: ExportSettings, imgsz: int, full_unpickling: bool):
    """ultralytics' ONNX export of ``weights`` (from a copy: it writes beside the weights), simplified."""
    import onnx
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="wildfire-kd-export-") as tmp:
        staged = Path(tmp) / "student.pt"
        shutil.copyfile(weights, staged)
        try:
            with ultralytics_loading(full_unpickling):
                traced = YOLO(str(staged)).export(
                    format="onnx",
                    imgsz=imgsz,
                    opset=settings.opset,
                    dynamic=settings.dynamic,
                    simplify=False,
                    device="cpu",
                    batch=1,
                    verbose=False,
                )
        except Exception as e:
            raise StageFailure(f"ONNX export of {weights} failed: {e}") from e
        graph = onnx.load(traced)
    if settings.simplify:
        import onnxslim

        try:
            graph = onnxslim.slim(graph)
        except Exception as e:  # ultralytics only warns here; a silently unsimplified file is not what we ship
            raise StageFailure(f"onnxslim {onnxslim.__version__} failed to simplify {weights}: {e}") from e
    graph.ir_version = min(graph.ir_version, 10)  # onnxruntime reads IR <= 10 everywhere
    return graph
