"""The one typed configuration of a wildfire-kd run.

Defaults live here and nowhere else; ``configs/*.yaml`` document them line by line. A config is loaded once
(YAML file, then ``--set section.key=value`` overrides, then the command's own flags) and passed down as an
object: stage code never reads raw dicts.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .edge.boxes import DEFAULT_IOU
from .errors import InputError
from .textfiles import read_yaml

# distill.unlabeled_ratio's default (BENCHMARKS.md, issue 28): over 3 seeds it beat kd by +0.083 / +0.033 mAP50-95
# (regimes L / M) with fewer false alarms on the means (not on every seed in L), for an epoch at 2x the labelled
# split's cost, not 11x; ratio 10 scored higher per epoch (one seed)
UNLABELED_RATIO = 1.0
MAX_IMGSZ = 4096  # every image-size option at most: 4096 px is 41x a 640 input's work and already gigabytes in training


def check_image_size(value: int | None) -> int | None:
    """Every image-size option's one rule: positive, a multiple of 32 (the largest YOLOv8 stride), at most MAX_IMGSZ
    (None: the option's own default)."""
    if value is None:
        return value
    if value < 32 or value > MAX_IMGSZ:
        raise ValueError(f"must be between 32 and {MAX_IMGSZ} pixels (a multiple of 32)")
    if value % 32:
        raise ValueError(
            f"must be a multiple of 32 (the largest YOLOv8 stride), e.g. {max(32, round(value / 32) * 32)}"
        )
    return value


def image_size_option(value: int | None, flag: str) -> int | None:
    """``check_image_size`` for a command-line option outside the config: exit 2 naming ``flag``."""
    try:
        return check_image_size(value)
    except ValueError as e:
        raise InputError(f"{flag} {value}: {e}") from None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainSettings(_Section):
    """How the student is trained: what ultralytics' DetectionTrainer receives, plus our stability guard."""

    data: str | None = Field(None, description="dataset data.yaml in ultralytics' YOLO format")
    teacher: str | None = Field(None, description="teacher weights (.pt), a YOLOv8 m/l/x finetuned on the same classes")
    teacher_sha256: str | None = Field(None, description="expected sha256 of the teacher file, checked before loading")
    teacher_modules: list[str] = Field(
        default_factory=list,
        description="Python files or importable modules defining the custom blocks a teacher checkpoint names under"
        " __main__ (its training script's classes); loaded before the teacher is unpickled, which still needs its"
        " pin or allow_unsafe_weights",
    )
    student: str = Field("yolov8n.yaml", description="student: yolov8n.yaml (from scratch) or a yolov8n .pt file")
    student_sha256: str | None = Field(None, description="expected sha256 of a student .pt, checked before loading")
    allow_unsafe_weights: bool = Field(
        False,
        description="load .pt files that need full unpickling without a sha256 pin (RISK: a pickle can run any code;"
        " only for files you trust). Off: such files are refused unless pinned; real checkpoints never need it",
    )
    out: str = Field("runs/train", description="folder that holds the run folder")
    name: str = Field("student", description="run folder name under `out`")
    exist_ok: bool = Field(False, description="reuse out/name instead of creating out/name2, out/name3, ...")
    epochs: int = Field(200, ge=1, description="training epochs")
    patience: int = Field(100, ge=0, description="early stopping: epochs without fitness improvement (0 = off)")
    imgsz: int = Field(640, ge=32, description="square training and validation image size (multiple of 32)")
    batch: int = Field(32, ge=1, description="images per batch (over all GPUs)")
    device: str = Field("", description="'' auto, 'cpu', '0', or '0,1' for multi-GPU DDP")
    workers: int = Field(8, ge=0, description="dataloader workers per process (ultralytics forces 0 on CPU)")
    optimizer: Literal["SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp"] = Field(
        "SGD", description="optimizer; SGD uses `momentum` with Nesterov"
    )
    lr0: float = Field(0.005, gt=0, description="initial learning rate")
    lrf: float = Field(0.01, gt=0, le=1, description="final learning rate as a fraction of lr0 (LambdaLR schedule)")
    momentum: float = Field(0.937, ge=0, lt=1, description="SGD momentum / Adam beta1")
    weight_decay: float = Field(0.0005, ge=0, description="weight decay")
    warmup_epochs: float = Field(3.0, ge=0, description="linear warm-up epochs")
    cos_lr: bool = Field(False, description="cosine instead of linear LambdaLR decay")
    grad_clip: float = Field(10.0, gt=0, description="max gradient L2 norm (clip_grad_norm_)")
    freeze: int | list[int] | None = Field(
        None, description="freeze the first N layers (10 = YOLOv8 backbone), or a list"
    )
    seed: int = Field(0, description="random seed")
    deterministic: bool = Field(True, description="deterministic algorithms (slower on GPU)")
    amp: bool = Field(True, description="mixed precision on CUDA; teacher and student share the autocast")
    val: bool = Field(True, description="validate every epoch (needed for best.pt and early stopping)")
    plots: bool = Field(True, description="write ultralytics' training plots")
    save_period: int = Field(-1, description="also save weights/epochN.pt every N epochs (-1 = off)")
    close_mosaic: int = Field(10, ge=0, description="disable mosaic augmentation for the last N epochs")
    cache: bool = Field(False, description="cache decoded images in RAM")
    max_bad_fraction: float = Field(
        0.0, ge=0, le=1, description="preflight: fraction of images with a problem tolerated (more = exit 2)"
    )
    max_consecutive_skipped: int = Field(
        20, ge=1, description="stop with an error after this many consecutive non-finite optimizer steps"
    )
    ultralytics: dict[str, Any] = Field(
        default_factory=dict, description="any other ultralytics train argument, e.g. {mosaic: 0.5, nbs: 64}"
    )
    unlabeled: list[str] = Field(
        default_factory=list,
        description="folders of frames without labels (a camera network's own views), taught only through the KD"
        " terms, never the ground-truth loss (distill.unlabeled_ratio, distill.unlabeled_weight); never written to",
    )
    loggers: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="trackers of every epoch: tensorboard (RUN/tensorboard), mlflow (OUT/mlflow.db unless"
        " MLFLOW_TRACKING_URI); pip install 'wildfire-kd[tracking]'",
    )

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, v: int) -> int:
        return check_image_size(v)

    @field_validator("teacher_sha256", "student_sha256")
    @classmethod
    def _hex_digest(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v.lower())):
            raise ValueError("must be a 64-character hex sha256 digest (run `sha256sum FILE`)")
        return v.lower() if v else v


class DistillSettings(_Section):
    """The response-based distillation of docs/design.md: which method, its weights, temperatures and schedule."""

    response: bool = Field(True, description="our response KD (`method`); off = plain training on the ground truth")
    method: Literal["dense", "pseudo"] = Field(
        "dense",
        description="'dense' = class scores (QFL) and DFL bins (LD) distilled at every anchor (same strides only);"
        " 'pseudo' = the teacher's NMS-kept detections as matched pseudo-targets (the first spec's method)",
    )
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="weight α of the KD terms over training: a cosine from 1 to 0.01, or 1 throughout"
    )
    lambda_detection: float = Field(1.0, ge=0, description="weight of the ground-truth detection loss")
    lambda_distillation: float = Field(2.0, ge=0, description="weight of the whole KD term")
    lambda_dist_kl: float | None = Field(
        None,
        ge=0,
        description="weight of the class term (dense: QFL; pseudo: Bernoulli KL); null = the method's own (dense 1.0,"
        " pseudo the first spec's 2.0)",
    )
    lambda_dist_ld: float = Field(3.0, ge=0, description="dense: weight of the localization (DFL bins) KL term")
    lambda_dist_ciou: float | None = Field(
        None, ge=0, description="weight of the 1 - CIoU box term; null = the method's own (dense 0 = off, pseudo 1.0)"
    )
    cls_beta: float = Field(2.0, ge=0, description="dense: focal exponent β of |σ(s) - σ(t)|^β in the class term")
    cls_normaliser: Literal["foreground", "target_scores"] = Field(
        "foreground",
        description="dense: the class term's divisor: the student's foreground-anchor count (PP-YOLOE) or its"
        " ground-truth target_scores_sum (tiny early in training: the term then swamps the ground truth)",
    )
    ld_temperature: float = Field(1.0, gt=0, description="dense: temperature T_ld of the DFL-bin KL (scaled by T_ld^2)")
    temperature: float = Field(2.0, gt=0, description="pseudo: temperature T of the class KL (scaled by T^2)")
    teacher_conf: float = Field(0.25, ge=0, le=1, description="pseudo: teacher NMS confidence threshold")
    teacher_iou: float = Field(0.7, ge=0, le=1, description="pseudo: teacher NMS IoU threshold")
    teacher_max_det: int = Field(300, ge=1, description="pseudo: max teacher pseudo-targets per image")
    topk: int = Field(10, ge=1, description="pseudo: student anchors matched per teacher box (task-aligned assigner)")
    cls_target: Literal["detection", "anchor"] = Field(
        "detection",
        description="pseudo: class target at each matched anchor: 'detection' = the kept detection's logit vector,"
        " 'anchor' = the teacher's own logits at that anchor (same anchor grid only, else 'detection')",
    )
    unlabeled_ratio: float = Field(
        UNLABELED_RATIO,
        gt=0,
        description="train.unlabeled: unlabelled images per labelled image in an epoch (each batch holds both in this"
        " proportion; an epoch is the labelled split once plus this many pool images per labelled one)",
    )
    unlabeled_weight: float = Field(
        1.0,
        ge=0,
        description="train.unlabeled: weight of the KD terms on an unlabelled image, per image, relative"
        " to a labelled image's KD terms",
    )
    feature_distillation: bool = Field(
        False, description="also run ultralytics' own feature distillation (distill_model) with the same teacher"
    )
    feature_weight: float = Field(6.0, ge=0, description="weight of ultralytics' feature KD loss (its `dis`)")
    class_map: dict[str, str] = Field(
        default_factory=dict,
        description="dataset class name -> the teacher's name for it where they differ, e.g. {smoke: Smoke}; the"
        " teacher answers for the dataset's classes only, selected and ordered by name",
    )

    @property
    def cls_weight(self) -> float:
        """λ of the class term: `lambda_dist_kl`, or the method's own default (dense: 1.0, picked by the benchmark in
        BENCHMARKS.md; pseudo: the first spec's 2.0)."""
        if self.lambda_dist_kl is not None:
            return self.lambda_dist_kl
        return 1.0 if self.method == "dense" else 2.0

    @property
    def box_weight(self) -> float:
        """λ of the box term: `lambda_dist_ciou`, or the method's own default (dense: off; pseudo: the first spec's
        1.0)."""
        if self.lambda_dist_ciou is not None:
            return self.lambda_dist_ciou
        return 0.0 if self.method == "dense" else 1.0


class FinetuneSettings(_Section):
    """`wildfire-kd finetune` / build's optional first stage: the teacher finetuned on the dataset before it teaches."""

    enabled: bool = Field(False, description="build: finetune the teacher on the dataset first (a stage of its own)")
    epochs: int = Field(50, ge=1, description="finetuning epochs")
    lr0: float = Field(0.001, gt=0, description="initial learning rate (lower than from scratch: it starts trained)")
    optimizer: Literal["SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp"] = Field("AdamW", description="optimizer")
    batch: int | None = Field(None, ge=1, description="images per batch; null = train.batch")
    imgsz: int | None = Field(None, ge=32, description="image size; null = train.imgsz")
    freeze: int | list[int] | None = Field(None, description="freeze the first N layers (10 = the backbone), or a list")
    patience: int = Field(20, ge=0, description="early stopping: epochs without fitness improvement (0 = off)")
    name: str = Field("teacher", description="run folder name under train.out (`finetune`) or the build folder")

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, v: int | None) -> int | None:
        return check_image_size(v)


class SynthSettings(_Section):
    """The deterministic synthetic smoke/fire dataset used by the demo and the tests."""

    classes: list[str] = Field(["smoke", "fire"], min_length=1, description="class names in label-id order")
    train_images: int = Field(96, ge=1, description="training images")
    val_images: int = Field(24, ge=1, description="validation images")
    unlabeled_images: int = Field(
        0,
        ge=0,
        description="also a pool of frames without labels (unlabeled/), drawn like the train images; their labels go"
        " to unlabeled_labels/, which training never reads (for the all-labelled comparison of benchmarks)",
    )
    imgsz: int = Field(160, ge=32, le=MAX_IMGSZ, description="image side in pixels")
    max_objects: int = Field(3, ge=1, description="objects per image at most (some images get none)")
    distractor_frames: float = Field(
        0.15, ge=0, le=1, description="fraction of smoke-free frames with a cloud bank, haze, sun glare or dust"
    )
    small_plumes: float = Field(
        0.3, ge=0, le=1, description="fraction of the other frames that also get a small, distant plume (smoke)"
    )
    seed: int = Field(0, description="random seed; the same seed writes the same files")

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in ("smoke", "fire")]
        if unknown or len(set(v)) != len(v):
            raise ValueError(f"must be distinct names out of ['smoke', 'fire'], got {v}")
        return v


class CameraProfileSetting(_Section):
    """One camera profile for validate to try on the sequences: the model's input size and its tiles."""

    imgsz: int | None = Field(None, ge=32, description="input size (multiple of 32); null = the validation size")
    tiles: int | Literal["auto"] = Field(1, description="tiles along the frame's longer side, or 'auto' (by size)")

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, v: int | None) -> int | None:
        return check_image_size(v)

    @field_validator("tiles")
    @classmethod
    def _tiles(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("1 (the whole frame only) or more, or 'auto'")
        return v


class ValidateSettings(_Section):
    """`wildfire-kd validate`: teacher and student on the same split with the same settings, and the gates."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_sequence_tiles(cls, data: Any) -> Any:
        if isinstance(data, dict) and "sequence_tiles" in data:
            data = dict(data)
            _warn_renamed("validation.sequence_tiles", "validation.camera_profiles (a profile with those tiles)")
            data.setdefault("camera_profiles", [{"tiles": data.pop("sequence_tiles")}])
            data.pop("sequence_tiles", None)
        return data

    after_train: bool = Field(True, description="`train` ends with this comparison against its teacher")
    split: Literal["val", "test"] = Field("val", description="dataset split both models are scored on")
    imgsz: int | None = Field(None, description="evaluation image size; null = train.imgsz")

    @field_validator("imgsz")
    @classmethod
    def _image_size(cls, v: int | None) -> int | None:
        return check_image_size(v)

    batch: int = Field(16, ge=1, description="validation batch size")
    device: str | None = Field(None, description="device for evaluation and latency; null = train.device")
    conf: float = Field(0.001, ge=0, le=1, description="confidence threshold for mAP (ultralytics' validation default)")
    iou: float = Field(0.7, ge=0, le=1, description="NMS IoU threshold for mAP")
    agreement_conf: float = Field(
        0.25, ge=0, le=1, description="teacher predictions at or above this confidence are the agreement ground truth"
    )
    target_precision: float | None = Field(
        None,
        gt=0,
        le=1,
        description="operating point: the lowest confidence whose precision (mean over classes)"
        " reaches this; null = the confidence of maximum F1. It ships in the ONNX file; detect uses it",
    )
    negatives: str | None = Field(
        None, description="folder of smoke-free frames (clouds, haze, glare, dust) scored for false alarms too"
    )
    small_area: float = Field(
        0.0025, gt=0, lt=1, description="objects below this fraction of the image area are small (32² px at 640)"
    )
    large_area: float = Field(
        0.0225, gt=0, lt=1, description="objects at least this fraction of the image area are large (96² px at 640)"
    )
    latency_warmup: int = Field(10, ge=0, description="untimed forward passes before latency is measured")
    latency_runs: int = Field(50, ge=1, description="timed batch-1 forward passes; the median is reported")
    min_map50_retention: float | None = Field(0.90, ge=0, description="gate: student mAP50 / teacher mAP50 at least")
    min_map50: float | None = Field(None, ge=0, le=1, description="gate: student mAP50 at least (null = off)")
    min_map50_95: float | None = Field(None, ge=0, le=1, description="gate: student mAP50-95 at least (null = off)")
    min_teacher_agreement: float | None = Field(
        None, ge=0, le=1, description="gate: student mAP50 against the teacher's predictions at least (null = off)"
    )
    max_latency_ms: float | None = Field(None, gt=0, description="gate: student median latency at most (null = off)")
    max_false_alarms_per_1000: float | None = Field(
        None, ge=0, description="gate: student false alarms per 1000 smoke-free frames at most (null = off)"
    )
    min_small_recall_retention: float | None = Field(
        None, ge=0, description="gate: student / teacher recall of small objects at least (null = off)"
    )
    sequences: str | None = Field(
        None,
        description="folder of camera sequences (edge/sequences.py: frames.csv or HPWREN names): both models run"
        " through the camera path over them, the alarm rule is chosen on them and ships in the model file",
    )
    sequence_budget: float = Field(
        1.0, gt=0, description="false alarms per camera-day the chosen alarm rule may raise (Fuego/HPWREN: under 1)"
    )
    sequence_floor: float = Field(
        0.05, gt=0, le=1, description="lowest per-frame confidence an alarm rule may look at (the search's floor)"
    )
    camera_profiles: list[CameraProfileSetting] = Field(
        default_factory=lambda: [CameraProfileSetting(tiles=1), CameraProfileSetting(tiles="auto")],
        description="the input sizes and tiles tried on the sequences, e.g. [{imgsz: 640, tiles: 1}, {imgsz: 640,"
        " tiles: 3}, {imgsz: 1024, tiles: 1}]; the one that finds the most fires within sequence_budget, then the"
        " earliest, then the cheapest per frame ships in the model file (export then uses its imgsz)",
    )
    sequence_masks: bool = Field(True, description="apply each sequence folder's mask.png / mask.json before alarms")
    max_minutes_to_detection: float | None = Field(
        None, gt=0, description="gate: the student's median minutes from smoke onset to its alarm (null = off)"
    )
    max_false_alarms_per_camera_day: float | None = Field(
        None, ge=0, description="gate: the student's false alarms per camera-day on the sequences (null = off)"
    )
    min_sequence_recall: float | None = Field(
        None, ge=0, le=1, description="gate: fire sequences the student alarms on, at least (null = off)"
    )
    robustness: bool = Field(
        True, description="recall of both models under JPEG re-compression, rescaling and brightness/contrast shifts"
    )
    min_robust_recall_retention: float | None = Field(
        None,
        ge=0,
        description="gate: the student's recall under its worst perturbation / its clean recall (null = off)",
    )


class ExportSettings(_Section):
    """`wildfire-kd export`: the student as ONNX for the cameras, plus optional fp16 / int8 variants."""

    imgsz: int | None = Field(None, description="static input size; null = the size the student was trained at")

    @field_validator("imgsz")
    @classmethod
    def _image_size(cls, v: int | None) -> int | None:
        return check_image_size(v)

    opset: int = Field(17, ge=11, le=21, description="ONNX opset (pinned so every build emits the same graph ops)")
    dynamic: bool = Field(False, description="dynamic batch/height/width instead of a static 1x3ximgszximgsz input")
    simplify: bool = Field(True, description="onnxslim simplification; a simplifier failure fails the export")
    formats: list[Literal["onnx", "openvino", "ncnn"]] = Field(
        ["onnx"],
        description="model formats written beside each other: onnx (always: the reference), openvino (an IR folder;"
        " pip install 'wildfire-kd[openvino]'), ncnn (a .param/.bin folder; 'wildfire-kd[ncnn]')",
    )
    half: bool = Field(
        False,
        description="also a half-precision variant: ONNX fp16 (decode tail kept in fp32), OpenVINO bf16 (the IR run in"
        " bf16 on CPUs that have it), NCNN fp16 (storage and arithmetic)",
    )
    int8: bool = Field(
        False,
        description="also an int8 variant: ONNX QDQ (decode tail kept in fp32), OpenVINO by NNCF post-training"
        " quantization on the val images (NCNN: none from PyPI)",
    )
    int8_calibration_images: int = Field(64, ge=1, description="val images used to calibrate int8 activations")
    int8_calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="onnxruntime calibration method for int8 activation ranges"
    )
    int8_op_types: list[str] = Field(
        ["Conv", "MatMul", "Gemm", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize", "Split"],
        min_length=1,
        description="op types quantized to int8 (QDQ): convolutions, SiLU and the neck stay int8 between layers"
        " (1.5x fp32 at 640 on CPU; convolutions alone: 1.2x; BENCHMARKS.md)",
    )

    @field_validator("formats")
    @classmethod
    def _onnx_first(cls, v: list[str]) -> list[str]:
        if "onnx" not in v:
            raise ValueError("must hold onnx: the ONNX file is what every other format is checked against")
        return ["onnx", *dict.fromkeys(f for f in v if f != "onnx")]


class VariantTolerances(_Section):
    """How closely one ONNX variant must follow PyTorch; null: reported, not judged."""

    box_atol: float | None = Field(None, gt=0, description="max |box difference| in pixels (null: reported only)")
    score_atol: float | None = Field(None, gt=0, description="max |class score difference| (null: reported only)")
    det_iou: float | None = Field(
        None, gt=0, le=1, description="a detection matches when IoU >= this, same class (null: reported only)"
    )
    det_conf_atol: float | None = Field(None, gt=0, description="and |confidence difference| <= this")
    box_min_score: float = Field(
        0.0, ge=0, le=1, description="boxes are compared where the best class score >= this (0: every anchor)"
    )
    max_map50_drop: float | None = Field(
        None, ge=0, le=1, description="max mAP50 drop against the fp32 ONNX model on the val split (null: not judged)"
    )


# each variant's defaults; a config that sets some of a variant's keys keeps the others
_VARIANT_DEFAULTS: dict[str, dict[str, float]] = {
    "fp32": {"box_atol": 2e-2, "score_atol": 1e-4, "det_iou": 0.99, "det_conf_atol": 1e-3},
    "fp16": {"box_atol": 8.0, "score_atol": 5e-3, "det_iou": 0.75, "det_conf_atol": 2e-2, "box_min_score": 0.01,
             "max_map50_drop": 0.01},
    "int8": {"box_min_score": 0.01, "max_map50_drop": 0.05},
    "bf16": {"box_atol": 8.0, "score_atol": 3e-2, "det_iou": 0.75, "det_conf_atol": 3e-2, "box_min_score": 0.01,
             "max_map50_drop": 0.01},
}  # fmt: skip

# the flat keys before per-variant tolerances (parity.fp16_box_atol, ...): still read, with a warning
_LEGACY_PARITY_KEYS = {
    "box_atol": ("fp32", "box_atol"),
    "score_atol": ("fp32", "score_atol"),
    "det_iou": ("fp32", "det_iou"),
    "det_conf_atol": ("fp32", "det_conf_atol"),
    "fp16_box_atol": ("fp16", "box_atol"),
    "fp16_score_atol": ("fp16", "score_atol"),
    "fp16_det_iou": ("fp16", "det_iou"),
    "fp16_det_conf_atol": ("fp16", "det_conf_atol"),
    "fp16_max_map50_drop": ("fp16", "max_map50_drop"),
    "int8_max_map50_drop": ("int8", "max_map50_drop"),
}


def _tolerances_of(variant: str, description: str) -> Any:
    return Field(default_factory=lambda: VariantTolerances(**_VARIANT_DEFAULTS[variant]), description=description)


class ParitySettings(_Section):
    """`wildfire-kd parity`: PyTorch vs onnxruntime on the same letterboxed tensors, with tolerances per variant."""

    images: int = Field(16, ge=0, description="real val images compared")
    random_tensors: int = Field(2, ge=0, description="seeded random tensors compared as well")
    seed: int = Field(0, description="seed of the random tensors")
    nms_conf: float = Field(0.25, ge=0, le=1, description="NMS confidence for detection-level parity")
    nms_iou: float = Field(0.7, ge=0, le=1, description="NMS IoU for detection-level parity")
    nms_iou_tie: float = Field(
        0.01,
        ge=0,
        le=1,
        description="a detection whose overlap with a stronger box is within this of nms_iou survives NMS by a tie:"
        " unmatched, it counts as borderline, not as a difference",
    )
    fp32: VariantTolerances = _tolerances_of("fp32", "fp32: the same numbers, every anchor")
    fp16: VariantTolerances = _tolerances_of(
        "fp16",
        "fp16: a box whose DFL bins are flat (an uncertain edge) moves a few px, so boxes count only where a"
        " detection could arise, and the mAP50 drop is judged",
    )
    int8: VariantTolerances = _tolerances_of(
        "int8", "int8: judged by its mAP50 drop; tensor and detection figures are reported only"
    )
    bf16: VariantTolerances = _tolerances_of(
        "bf16", "bf16 (OpenVINO on CPUs with BF16): 8 mantissa bits move boxes up to ~2 px and scores ~0.01"
    )
    formats: dict[Literal["onnx", "openvino", "ncnn"], dict[str, dict[str, float | None]]] = Field(
        default_factory=dict,
        description="per format, per variant, tolerances that differ from the variant's, e.g."
        " {openvino: {int8: {max_map50_drop: 0.03}}}",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys_and_variant_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, (variant, key) in _LEGACY_PARITY_KEYS.items():
            if old in data:
                _warn_renamed(f"parity.{old}", f"parity.{variant}.{key}")
                data[variant] = {**dict(data.get(variant) or {}), key: data.pop(old)}
        if "box_min_score" in data:
            _warn_renamed("parity.box_min_score", "parity.fp16.box_min_score and parity.int8.box_min_score")
            value = data.pop("box_min_score")
            for variant in ("fp16", "int8"):
                data[variant] = {**dict(data.get(variant) or {}), "box_min_score": value}
        for variant, defaults in _VARIANT_DEFAULTS.items():
            if isinstance(data.get(variant), dict):
                data[variant] = {**defaults, **data[variant]}
        return data

    @model_validator(mode="after")
    def _format_overrides_are_tolerances(self) -> ParitySettings:
        # checked when the config loads, not when parity reaches that file at the end of a build
        for fmt, variants in self.formats.items():
            for variant in variants:
                self.for_variant(variant, fmt)
        return self

    def for_variant(self, variant: str, fmt: str = "onnx") -> VariantTolerances:
        """The tolerances of ``variant`` (fp32, fp16, bf16 or int8) in ``fmt``: the variant's, with that format's own
        where parity.formats sets them."""
        if variant not in ("fp32", "fp16", "bf16", "int8"):
            raise InputError(f"unknown model variant {variant!r}: expected fp32, fp16, bf16 or int8")
        own = (self.formats.get(fmt) or {}).get(variant)
        tolerances = getattr(self, variant)
        try:
            return VariantTolerances(**{**tolerances.model_dump(), **own}) if own else tolerances
        except ValidationError as e:
            raise InputError(f"parity.formats.{fmt}.{variant}: {e.errors()[0]['msg']}") from None


def _warn_renamed(old: str, new: str) -> None:
    import logging

    logging.getLogger("wildfire_kd").warning("%s is now %s; the old key still works", old, new)


class DetectSettings(_Section):
    """`wildfire-kd detect`: an exported model over images as a camera runs it (numpy, OpenCV, its runtime)."""

    conf: float | None = Field(
        None, ge=0, le=1, description="confidence threshold; null = the operating point validate shipped in the file"
    )
    iou: float = Field(DEFAULT_IOU, ge=0, le=1, description="NMS IoU threshold (class-aware)")
    alarm_mode: Literal["count", "score"] | None = Field(
        None,
        description="--sequence: 'count' = k of the last n frames, 'score' = summed confidence over n frames; the"
        " alarm_* keys left null keep the rule the model file ships (validate chose it on sequences), else the"
        " default (score: summed confidence >= 1.25 over 5 frames, floor 0.1, held to 0.5, IoU 0.3); another mode"
        " starts from its own defaults (count: 3 of 5)",
    )
    alarm_k: int | None = Field(None, ge=1, description="count: alarm when a detection recurs in k ...")
    alarm_n: int | None = Field(None, ge=1, description="... of the last n frames (this one included)")
    alarm_threshold: float | None = Field(None, gt=0, description="score: the summed confidence that alarms")
    alarm_floor: float | None = Field(None, ge=0, le=1, description="per-frame confidence the alarm logic still sees")
    alarm_iou: float | None = Field(
        None, gt=0, le=1, description="overlap with which a detection counts as the same object"
    )
    alarm_release: float | None = Field(
        None, gt=0, le=1, description="hysteresis: an ongoing alarm ends below this fraction of its trigger level"
    )
    save_images: bool = Field(False, description="also write annotated copies into OUT/images/")
    threads: int | None = Field(
        None, ge=1, description="inference threads, every runtime; null = the runtime's default"
    )
    runtime: Literal["onnxruntime", "openvino", "ncnn"] | None = Field(
        None, description="null = from the model given (.onnx: onnxruntime, an OpenVINO IR: openvino, an NCNN folder)"
    )
    tiles: int | Literal["auto"] | None = Field(
        None,
        description="overlapping tiles along the frame's longer side besides the whole frame (distant plumes; N^2-ish"
        " cost): a number (1 = the whole frame only), 'auto' (by the frame's size: no tile shrunk more than 2x, 3 at"
        " most), or null = the model file's camera profile, else 'auto'",
    )
    static: bool = Field(
        True, description="--sequence: suppress detections that stay put (a lens artefact), learnt per camera"
    )
    events: bool = Field(
        True, description="--sequence: one event per fire (opened / updated / closed), not an alert per alarm"
    )
    static_memory: str | None = Field(
        None, description="--sequence: a file of the cameras' static memories, read at the start and written back"
    )
    learn_static: str | None = Field(
        None,
        description="--sequence: a folder of each camera's smoke-free frames (a sub-folder per camera, named as its"
        " folder) whose detections are static from the start",
    )

    @field_validator("tiles")
    @classmethod
    def _tiles(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("1 (the whole frame only) or more, 'auto', or null (the model's camera profile)")
        return v

    def alarm_overrides(self) -> dict[str, Any]:
        """The alarm rule's fields this config sets (the rest come from the model file)."""
        from .edge.alarms import overrides_of

        return overrides_of(self)


class DemoSettings(_Section):
    """`wildfire-kd demo`: synthetic data, a quick yolov8s teacher, then the distilled student, on CPU in minutes."""

    out: str = Field("runs/demo", description="folder for the dataset, the teacher run and the student run")
    data: str | None = Field(None, description="use this YOLO dataset (data.yaml) instead of writing the synthetic one")
    device: str = Field("cpu", description="device for both trainings ('cpu', '0', ...)")
    teacher_model: str = Field("yolov8s.yaml", description="teacher architecture, trained from scratch on the data")
    teacher_epochs: int = Field(25, ge=1, description="teacher training epochs")
    epochs: int = Field(20, ge=1, description="student (distillation) epochs")
    imgsz: int = Field(128, ge=32, description="training image size for both (multiple of 32)")

    @field_validator("imgsz")
    @classmethod
    def _image_size(cls, v: int) -> int:
        return check_image_size(v)

    batch: int = Field(8, ge=1, description="batch size; one optimizer step per batch (nbs = batch)")
    optimizer: Literal["SGD", "Adam", "AdamW"] = Field("AdamW", description="AdamW learns in few steps from scratch")
    lr0: float = Field(0.002, gt=0, description="initial learning rate for both")


class Config(_Section):
    """A whole wildfire-kd configuration."""

    train: TrainSettings = Field(default_factory=TrainSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    distill: DistillSettings = Field(default_factory=DistillSettings)
    validation: ValidateSettings = Field(default_factory=ValidateSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    parity: ParitySettings = Field(default_factory=ParitySettings)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    synth: SynthSettings = Field(default_factory=SynthSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)

    # dotted keys the user set (file, --set, flags) as opposed to defaults; resume compares only these
    _explicit: set[str] = PrivateAttr(default_factory=set)

    @property
    def explicit_keys(self) -> set[str]:
        return set(self._explicit)

    @property
    def validation_imgsz(self) -> int:
        """The size validation scores both models at: validation.imgsz, else train.imgsz."""
        return self.validation.imgsz or self.train.imgsz

    @property
    def validation_device(self) -> str:
        """The device validation runs on: validation.device, else train.device."""
        return self.train.device if self.validation.device is None else self.validation.device

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        d = self.distill
        if d.response and d.lambda_detection == 0 and d.lambda_distillation == 0:
            raise ValueError("distill.lambda_detection and distill.lambda_distillation are both 0: nothing would train")
        if self.train.unlabeled and not d.response:
            raise ValueError(
                "train.unlabeled: unlabelled frames teach only through the response KD terms, which"
                " distill.response=false switches off; set distill.response=true or drop train.unlabeled"
            )
        return self

    def digest(self) -> str:
        """sha256 of the canonical JSON of this config (for reports and resume checks)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def valid_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key a config accepts, e.g. 'train.lr0'."""
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(valid_keys(ann, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _did_you_mean(key: str) -> str:
    keys = valid_keys()
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close:  # a bare or misplaced key such as 'lr0': offer every section that has it
        leaf = key.rsplit(".", 1)[-1]
        leaves = difflib.get_close_matches(leaf, sorted({k.rsplit(".", 1)[-1] for k in keys}), n=1, cutoff=0.6)
        close = [k for k in keys if k.rsplit(".", 1)[-1] in leaves]
    if not close:
        return f"; valid sections: {', '.join(Config.model_fields)}"
    return "; did you mean " + " or ".join(f"'{k}'" for k in close) + "?"


def _describe(error: dict[str, Any], origins: dict[str, str]) -> str:
    """One validation problem, prefixed with where the offending key was set (file, --set or option)."""
    key = ".".join(str(p) for p in error["loc"])
    parts = key.split(".")
    prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]  # a bad value may sit inside a section map
    origin = next((origins[k] for k in prefixes if k in origins), "the configuration")
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{origin}: unknown key '{key}'{_did_you_mean(key)}"
    expected = error.get("msg", kind)
    got = error.get("input")
    return f"{origin}: '{key}': {expected} (got {got!r})" if key else f"{origin}: {expected}"


def _is_text_field(path: list[str]) -> bool:
    """True for keys typed `str` / `str | None`: their --set value is taken verbatim, not parsed as YAML."""
    model: type[BaseModel] = Config
    for part in path[:-1]:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return False
        model = field.annotation
    field = model.model_fields.get(path[-1])
    return field is not None and field.annotation in (str, str | None)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.lr0=0.01' -> (['train', 'lr0'], 0.01).

    The value is parsed as YAML (numbers, bools, lists, {maps}), except for text keys, where '007' or a hex
    digest made only of digits must stay the text it is ('null' still clears an optional key).
    """
    if "=" not in item:
        raise InputError(f"--set {item!r}: expected section.key=value, e.g. --set train.lr0=0.01")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2:
        raise InputError(f"--set {item!r}: the key needs its section{_did_you_mean(key.strip())}")
    if _is_text_field(path):
        return path, None if raw.strip() in ("null", "~", "") else raw
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise InputError(f"--set {item!r}: value is not valid YAML ({e.problem})") from e
    return path, value


def _apply(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(f"--set {'.'.join(path)}: '{part}' is a value, not a section")
        node = child
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), **flags: Any) -> Config:
    """Load a config: YAML file (optional), then ``--set`` overrides, then command flags (``train__lr0=...``).

    Raises InputError naming the file, the key and the fix; never a traceback for bad input.
    """
    tree: dict[str, Any] = {}
    origins: dict[str, str] = {}  # dotted key -> where its value came from, so an error names the real source
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"config file not found: {p} (pass an existing YAML file to --config)")
        loaded = read_yaml(p, "a wildfire-kd YAML config to --config (see configs/)")
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(
                f"{p}: expected a mapping of sections (train:, distill:, ...), got {type(loaded).__name__}"
            )
        tree = loaded or {}
        origins.update(dict.fromkeys(_flatten(tree), str(p)))
    for item in overrides:
        key_path, value = parse_override(item)
        _apply(tree, key_path, value)
        origins[".".join(key_path)] = f"--set {item}"
    for name, value in flags.items():
        if value is not None:
            _apply(tree, name.split("__"), value)
            origins[name.replace("__", ".")] = f"the command-line option for {name.replace('__', '.')}"
    try:
        config = Config.model_validate(tree)
    except ValidationError as e:
        problems = [_describe(err, origins) for err in e.errors(include_url=False)]
        raise InputError("; ".join(problems)) from None
    config._explicit = set(_flatten(tree))
    return config


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        if isinstance(v, dict) and f"{prefix}{k}" in Config.model_fields:
            keys += _flatten(v, f"{prefix}{k}.")
        else:
            keys.append(f"{prefix}{k}")
    return keys


def save_config(config: Config, path: Path) -> None:
    """The resolved config as YAML (atomically: resume and the build read it back)."""
    from .reports import write_yaml

    write_yaml(path, config.model_dump(mode="json"))
