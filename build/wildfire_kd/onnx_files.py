"""Model files from a model: ultralytics' exporter (every format), the pinned simplifier, the checker, an atomic write.

What `export` builds its files from (formats.py its OpenVINO and NCNN folders) and `validate` its temporary camera
models (camera sequences) with.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import ExportSettings
from .edge import metadata as model_metadata
from .edge.metadata import SEAL_KEY as SEAL
from .errors import StageFailure
from .guard import atomic_file
from .weights import ultralytics_loading


def save_checked(model, path: Path) -> None:
    """Write ``model`` to ``path`` only if onnx.checker passes it (atomically: never half a file). A model with our
    metadata is sealed (edge/metadata.py): a camera refuses it when its metadata or weights are edited later."""
    import onnx

    ours = model_metadata.read_onnx(model, path)
    if ours:
        model_metadata.write_onnx(model, {**ours, SEAL: model_metadata.seal_value([path.name])})
    data = model.SerializeToString()
    if ours:
        digest = model_metadata.sealed_digest({path.name: data})
        data = data.replace(model_metadata.seal_value([])["sha256"].encode(), digest.encode())
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise StageFailure(f"{path.name}: onnx.checker rejected the model: {e}") from e


@contextlib.contextmanager
def ultralytics_export(weights: Path, fmt: str, imgsz: int, full_unpickling: bool, **options: Any) -> Iterator[Path]:
    """ultralytics' export of ``weights`` to ``fmt`` (CPU, batch 1), from a copy: it writes beside the weights it is
    given. Yields what it made, inside a temporary folder that is removed afterwards: take what you keep."""
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix=f"wildfire-kd-{fmt}-") as tmp:
        staged = Path(tmp) / "student.pt"
        shutil.copyfile(weights, staged)
        try:
            with ultralytics_loading(full_unpickling):
                made = YOLO(str(staged)).export(
                    format=fmt, imgsz=imgsz, device="cpu", batch=1, verbose=False, **options
                )
        except Exception as e:
            raise StageFailure(f"{fmt} export of {weights} failed: {' '.join(str(e).split())[:300]}") from e
        yield Path(made)


def traced_graph(weights: Path, settings: ExportSettings, imgsz: int, full_unpickling: bool):
    """ultralytics' ONNX export of ``weights``, simplified."""
    import onnx

    options = {"opset": settings.opset, "dynamic": settings.dynamic, "simplify": False}
    with ultralytics_export(weights, "onnx", imgsz, full_unpickling, **options) as traced:
        graph = onnx.load(traced)
    if settings.simplify:
        import onnxslim

        try:
            graph = onnxslim.slim(graph)
        except Exception as e:  # ultralytics only warns here; a silently unsimplified file is not what we ship
            raise StageFailure(f"onnxslim {onnxslim.__version__} failed to simplify {weights}: {e}") from e
    graph.ir_version = min(graph.ir_version, 10)  # onnxruntime reads IR <= 10 everywhere
    return graph
