"""`wildfire-kd demo`: the whole job on an embedded default, on CPU, in a few minutes.

Synthetic smoke/fire data -> a yolov8s teacher trained from scratch -> `build` (the yolov8n student distilled
from it, validated against it, exported to ONNX and checked for parity). Shows the product working end to end
without any download; not a model to ship.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Config
from .distill import TrainResult, train
from .layout import DEMO_REPORT, TRAIN_REPORT, weights_file
from .pipeline import BuildResult, build
from .reports import write_json
from .synth import synthesize


@dataclass
class DemoResult:
    out: str
    data: str
    teacher: TrainResult
    build: BuildResult
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _stage_config(config: Config, data: Path, name: str, model: str, epochs: int, teacher: str | None) -> Config:
    d = config.demo
    stage = config.model_copy(deep=True)
    t = stage.train
    t.data, t.student, t.teacher, t.epochs, t.imgsz, t.batch = str(data), model, teacher, epochs, d.imgsz, d.batch
    t.device, t.optimizer, t.lr0, t.out, t.name, t.exist_ok = d.device, d.optimizer, d.lr0, d.out, name, True
    t.warmup_epochs, t.close_mosaic, t.plots, t.patience = 1.0, max(1, epochs // 5), False, 0
    t.ultralytics = {**t.ultralytics, "nbs": d.batch}  # one optimizer step per batch: few images, many steps
    stage.distill.response = teacher is not None
    stage.export.half = stage.export.int8 = teacher is not None  # the demo shows every ONNX variant
    stage.parity.images = min(stage.parity.images, config.synth.val_images)
    return stage


def run_demo(config: Config) -> DemoResult:
    start = time.time()
    d, s = config.demo, config.synth
    out = Path(d.out)
    if d.data:
        data = Path(d.data)
    else:
        data = synthesize(out / "data", s, force=True)  # the demo's own folder: written again, the same files
    teacher_run = out / "teacher"
    if (teacher_run / TRAIN_REPORT).is_file() and weights_file(teacher_run).is_file():
        teacher = TrainResult.load(teacher_run / TRAIN_REPORT)  # reuse
    else:
        teacher = train(_stage_config(config, data, "teacher", d.teacher_model, d.teacher_epochs, None))
    result = build(_stage_config(config, data, "student", "yolov8n.yaml", d.epochs, teacher.best), out / "build")
    result = DemoResult(str(out), str(data), teacher, result, round(time.time() - start, 1))
    write_json(out / DEMO_REPORT, result.to_dict())
    return result
