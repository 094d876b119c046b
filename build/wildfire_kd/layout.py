"""The names of the files and folders wildfire-kd writes, in one place (modules and tests import them from here).

RUN/  (a training run, ultralytics' save_dir)          OUT/  (a build)
  weights/best.pt, last.pt, epochN.pt                    train/          a training run, as on the left
  wildfire_kd_config.yaml, preflight.json                validation/     validation.json, .md, .png
  batch_log.jsonl, results.csv, train.json               export/         student*.onnx, export.json, parity*.json
  validation/ (the after-train comparison)               build_report.json, build_config.yaml, MODEL_CARD.md,
  tracking.json, tensorboard/, dataset/ (links)          SHA256SUMS, mlflow.db, mlartifacts/
  unlabeled.txt, unlabeled.json (train.unlabeled)

OUT/  (`detect`)                                        any OUT/
  detections.jsonl, alerts.jsonl, images/ (annotated)    wildfire-kd-error.log (an internal error's traceback)

Pure constants: the camera runtime (edge/) imports this module too.
"""

from __future__ import annotations

from pathlib import Path

# a training run
WEIGHTS_DIR = "weights"
BEST = "best.pt"
LAST = "last.pt"
RUN_CONFIG = "wildfire_kd_config.yaml"
PREFLIGHT = "preflight.json"
BATCH_LOG = "batch_log.jsonl"
TRAIN_REPORT = "train.json"
MIRROR_DIR = "dataset"  # the links to the dataset that ultralytics reads (its label caches land there)
UNLABELED_LIST = "unlabeled.txt"  # train.unlabeled: the frames the run trains on, one per line (frozen for resume)
UNLABELED_REPORT = "unlabeled.json"  # how many unlabelled frames taught the student, and where they came from

# finetune (a training run, as above, of the teacher)
FINETUNE_REPORT = "finetune.json"  # the teacher before and after, on the val split

# validation, export, parity
VALIDATION_DIR = "validation"
VALIDATION_JSON, VALIDATION_MD, VALIDATION_PNG = "validation.json", "validation.md", "validation.png"
EXPORT_DIR = "export"
EXPORT_REPORT = "export.json"
ONNX_FILES = {"fp32": "student.onnx", "fp16": "student_fp16.onnx", "int8": "student_int8.onnx"}
# the other formats' model folders, per precision (as ultralytics names them: <name>_<format>_model)
MODEL_FOLDERS = {
    ("openvino", "fp32"): "student_openvino_model",
    ("openvino", "bf16"): "student_bf16_openvino_model",  # the same IR, run in bf16 where the CPU has it
    ("openvino", "int8"): "student_int8_openvino_model",
    ("ncnn", "fp32"): "student_ncnn_model",
    ("ncnn", "fp16"): "student_fp16_ncnn_model",
}
MODEL_SIDECAR = "metadata.yaml"  # a model folder's metadata (ultralytics' keys and ours; written as JSON)
PARITY_REPORT = "parity.json"  # fp32; the variants write parity_<variant>.json

# tracking (train.loggers)
TRACKING_STATE = "tracking.json"  # the MLflow run a resumed run continues
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB, MLFLOW_ARTIFACTS = "mlflow.db", "mlartifacts"

# a build
TRAIN_DIR = "train"
BUILD_REPORT = "build_report.json"
BUILD_CONFIG = "build_config.yaml"
MODEL_CARD = "MODEL_CARD.md"
SHA256SUMS = "SHA256SUMS"

# `demo`
DEMO_REPORT = "demo.json"

# `synth`
SYNTH_MARKER = ".wildfire-kd-synth.json"  # what an output folder of `synth` holds: --force may replace it

# camera sequences (edge/sequences.py) and a camera's own settings, in its folder of frames
SEQUENCE_FRAMES = "frames.csv"  # file,time,smoke[,x1,y1,x2,y2]
SEQUENCE_SMOKE = "smoke.json"  # {"region": [x1, y1, x2, y2]}: where a sequence's smoke is, when frames carry no box
STATIC_MEMORY = "static_memory.json"  # `detect --sequence`: each camera's learnt static spots (edge/static.py)
MASK_IMAGE, MASK_POLYGONS = "mask.png", "mask.json"  # regions of the view that never alarm

# `detect` (the camera runtime)
DETECTIONS = "detections.jsonl"
ALERTS = "alerts.jsonl"
ANNOTATED_DIR = "images"

# `wildfire-kd-edge serve`: its state folder
SERVICE_DB = "service.sqlite"  # the cameras' state and the alerts' outbox (SQLite, WAL)
SERVICE_ALERTS = "alerts.jsonl"  # every alert, as delivered

# any command
ERROR_LOG = "wildfire-kd-error.log"  # an internal error's traceback


def weights_file(run: str | Path, name: str = BEST) -> Path:
    return Path(run) / WEIGHTS_DIR / name


def parity_report(variant: str, fmt: str = "onnx") -> str:
    """parity.json for student.onnx; parity_<variant>.json for its variants, parity_<format>_<variant>.json for the
    other formats' folders."""
    if fmt != "onnx":
        return f"parity_{fmt}_{variant}.json"
    return PARITY_REPORT if variant == "fp32" else f"parity_{variant}.json"
