"""`wildfire-kd demo`: the whole job on an embedded default, on CPU, in a few minutes.

Synthetic smoke/fire data -> a yolov8s teacher trained from scratch -> the yolov8n student distilled from it.
Shows the product working end to end without any download; not a model to ship.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Config
from .data import synthesize
from .distill import TrainResult, train

REPORT_NAME = "demo.json"


@dataclass
class DemoResult:
    out: str
    data: str
    teacher: TrainResult
    student: TrainResult
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
    return stage


def run_demo(config: Config) -> DemoResult:
    start = time.time()
    d, s = config.demo, config.synth
    out = Path(d.out)
    data = synthesize(out / "data", s.classes, s.train_images, s.val_images, s.imgsz, s.max_objects, s.seed)
    teacher = train(_stage_config(config, data, "teacher", d.teacher_model, d.teacher_epochs, None))
    student = train(_stage_config(config, data, "student", "yolov8n.yaml", d.epochs, teacher.best))
    result = DemoResult(str(out), str(data), teacher, student, round(time.time() - start, 1))
    (out / REPORT_NAME).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result
