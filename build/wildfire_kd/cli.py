"""The `wildfire-kd` command line: parse, call one library function, map errors to exit codes.

Exit codes: 0 success, 1 the model is not good enough (a gate), 2 bad input or configuration, 3 the tool broke
(an internal error: one line, the traceback in a file, or on the terminal with --debug). Nothing heavy is
imported at module level, so `--help` never imports torch or ultralytics.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import DEBUG_ENV, INTERNAL_ERROR_EXIT, DiskFull, GateFailure, WildfireKDError
from .guard import disk_full

app = typer.Typer(
    name="wildfire-kd",
    help="Build an edge wildfire detector: distil a YOLOv8 teacher into YOLOv8n, validate, export, check parity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (see configs/); defaults when omitted")
]
UnsafeOpt = Annotated[
    bool | None,
    typer.Option(
        "--allow-unsafe-weights",
        help="load .pt files that need full unpickling without a pin (RISK: runs code from the file) "
        "(train.allow_unsafe_weights)",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override one key, e.g. --set train.lr0=0.01 (repeatable)"),
]
DataOpt = Annotated[str | None, typer.Option(help="dataset data.yaml (train.data)")]
TeacherOpt = Annotated[str | None, typer.Option(help="teacher weights .pt (train.teacher)")]
StudentOpt = Annotated[str | None, typer.Option(help="yolov8n.yaml or a yolov8n .pt (train.student)")]
RunOutOpt = Annotated[str | None, typer.Option(help="folder for the run folder (train.out)")]
TrainDeviceOpt = Annotated[str | None, typer.Option(help="'cpu', '0', '0,1' (train.device)")]
ModulesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--teacher-modules",
        help="Python file or module defining the teacher's custom blocks (train.teacher_modules; repeatable)",
    ),
]

UnlabeledOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--unlabeled",
        help="folder of frames without labels, taught through the KD terms only (train.unlabeled; repeatable)",
    ),
]


_output_dir: Path | None = None  # where a command writes; an internal error's traceback goes there


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="print the traceback of an internal error (exit 3)")] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _writes_to(folder: str | Path, flag: str, lock: bool = True) -> None:
    """Check, before any work, that this command can write into ``folder`` (exit 2 naming it), remember it for an
    internal error's traceback file, and (``lock``) take it for this run: a second run into it is refused (exit 2
    naming the holder). `train` and `finetune` lock their run folder once they know it (distill/stage.py)."""
    from .guard import lock_folder
    from .reports import ensure_writable_dir

    global _output_dir
    _output_dir = ensure_writable_dir(folder, flag)
    if lock:
        lock_folder(folder, flag)


def _save_traceback(command: str) -> Path | None:
    """The current exception's traceback in OUT/wildfire-kd-error.log, else in the temp folder; None if neither."""
    from .layout import ERROR_LOG

    text = f"wildfire-kd {command} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n{traceback.format_exc()}"
    for folder in (_output_dir, Path(tempfile.gettempdir())):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / ERROR_LOG
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def _handle_errors(fn):
    """Turn our typed errors into their exit codes with a one-line reason; anything else is exit 3."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        command = fn.__name__.replace("_", " ")
        try:
            return _run_releasing_locks(fn, *args, **kwargs)
        except WildfireKDError as e:
            typer.echo(f"wildfire-kd {command}: error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo(f"wildfire-kd {command}: interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as e:
            if type(e).__module__.split(".")[0] in {"typer", "click"}:  # usage errors and Exit: typer's own codes
                raise
            full = disk_full(e, _output_dir)
            if full is not None:  # the environment, not a bug: no traceback to write (there is no room for one)
                typer.echo(f"wildfire-kd {command}: error: {full}", err=True)
                raise typer.Exit(DiskFull.exit_code) from None
            if os.environ.get(DEBUG_ENV) == "1":
                traceback.print_exc()
                where = "traceback above"
            else:
                saved = _save_traceback(command)
                where = f"traceback in {saved}" if saved else "rerun with --debug for the traceback"
            summary = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            what = f"{type(e).__name__}: {summary}" if summary else type(e).__name__
            typer.echo(f"wildfire-kd {command}: internal error (a bug, not your input): {what}; {where}", err=True)
            raise typer.Exit(INTERNAL_ERROR_EXIT) from None

    return wrapper


def _run_releasing_locks(fn, *args, **kwargs):
    from .guard import release_folders

    try:
        return fn(*args, **kwargs)
    finally:
        release_folders()  # the process usually ends here anyway; a CLI run in-process must not keep them


def command(fn):
    """A wildfire-kd subcommand: registered with typer, its errors mapped to exit codes (``_handle_errors``)."""
    return app.command()(_handle_errors(fn))


def _student_pin(cfg) -> dict[str, Any]:
    """How a command loads the student .pt it is given: its sha256 pin and whether full unpickling is allowed."""
    return {"weights_sha256": cfg.train.student_sha256, "allow_unsafe_weights": cfg.train.allow_unsafe_weights}


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def _load(config: Path | None, set_: list[str] | None, options: dict[str, Any]):
    """The one config of a command: --config, then --set, then its own options. ``options`` maps each config key
    (``section.key``) to the value of the option that sets it; options left at None keep the config's value."""
    from .config import load_config

    _setup_logging()
    flags = {key.replace(".", "__"): value for key, value in options.items()}
    return load_config(config, set_ or [], **flags)


@command
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = None,
    teacher: TeacherOpt = None,
    student: StudentOpt = None,
    out: RunOutOpt = None,
    name: Annotated[str | None, typer.Option(help="run folder name (train.name)")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs (train.epochs)")] = None,
    imgsz: Annotated[int | None, typer.Option(help="image size, multiple of 32 (train.imgsz)")] = None,
    batch: Annotated[int | None, typer.Option(help="batch size (train.batch)")] = None,
    device: TrainDeviceOpt = None,
    resume: Annotated[str | None, typer.Option(help="resume a run: its folder or weights/last.pt")] = None,
    force: Annotated[
        bool, typer.Option(help="resume even if the given settings differ (the run's own are kept)")
    ] = False,
    allow_unsafe_weights: UnsafeOpt = None,
    teacher_modules: ModulesOpt = None,
    unlabeled: UnlabeledOpt = None,
) -> None:
    """Distil the teacher into a YOLOv8n student (the main job)."""
    from .distill import train as run_train
    from .layout import TRAIN_REPORT

    given = {"data": data, "teacher": teacher, "student": student, "out": out, "name": name, "epochs": epochs}
    given |= {"imgsz": imgsz, "batch": batch, "device": device, "allow_unsafe_weights": allow_unsafe_weights}
    given |= {"teacher_modules": teacher_modules, "unlabeled": unlabeled}
    cfg = _load(config, set_, {f"train.{key}": value for key, value in given.items()})
    _writes_to(resume or cfg.train.out, "--resume folder" if resume else "--out", lock=False)
    result = run_train(cfg, resume=resume, force=force)
    typer.echo(f"train: run folder {result.run_dir}; report {Path(result.run_dir) / TRAIN_REPORT}")
    typer.echo(f"train: best weights {result.best}")
    if result.validation is not None:
        typer.echo(f"train: student vs teacher report {result.validation['report']}")
        if not result.passed:
            raise GateFailure("; ".join(result.validation["failed_gates"]))


@command
def finetune(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = None,
    teacher: TeacherOpt = None,
    out: RunOutOpt = None,
    epochs: Annotated[int | None, typer.Option(help="finetuning epochs (finetune.epochs)")] = None,
    device: TrainDeviceOpt = None,
    resume: Annotated[str | None, typer.Option(help="resume a finetuning run: its folder or weights/last.pt")] = None,
    allow_unsafe_weights: UnsafeOpt = None,
    teacher_modules: ModulesOpt = None,
) -> None:
    """Finetune the teacher on the dataset (its own classes and blocks), scored before and after on the val split."""
    from .finetune import finetune as run_finetune
    from .layout import FINETUNE_REPORT

    given = {"train.data": data, "train.teacher": teacher, "train.out": out, "finetune.epochs": epochs}
    given |= {"train.device": device, "train.allow_unsafe_weights": allow_unsafe_weights}
    cfg = _load(config, set_, given | {"train.teacher_modules": teacher_modules})
    _writes_to(resume or cfg.train.out, "--resume folder" if resume else "--out", lock=False)
    result = run_finetune(cfg, resume=resume)
    for role in ("before", "after"):
        scores = getattr(result, role)
        typer.echo(f"finetune: teacher {role}: mAP50 {scores['map50']:.4f}, mAP50-95 {scores['map50_95']:.4f}")
    typer.echo(f"finetune: finetuned teacher {result.best}; report {Path(result.run_dir) / FINETUNE_REPORT}")


@command
def validate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    student: Annotated[str | None, typer.Option(help="student weights .pt (default: train.student)")] = None,
    teacher: TeacherOpt = None,
    data: DataOpt = None,
    out: Annotated[Path, typer.Option(help="folder for validation.json/.md/.png")] = Path("runs/validate"),
    imgsz: Annotated[int | None, typer.Option(help="image size (validation.imgsz, else train.imgsz)")] = None,
    device: Annotated[str | None, typer.Option(help="'cpu', '0', ... (validation.device)")] = None,
    allow_unsafe_weights: UnsafeOpt = None,
    teacher_modules: ModulesOpt = None,
    sequences: Annotated[
        str | None, typer.Option(help="folder of camera sequences: time to detection, alarms (validation.sequences)")
    ] = None,
) -> None:
    """Evaluate teacher and student on the same split; exit 1 when a gate fails."""
    from .layout import VALIDATION_JSON
    from .validate import validate_from_config

    given = {"train.student": student, "train.teacher": teacher, "train.data": data}
    given |= {
        "train.allow_unsafe_weights": allow_unsafe_weights,
        "validation.imgsz": imgsz,
        "validation.device": device,
    }
    given |= {"train.teacher_modules": teacher_modules, "validation.sequences": sequences}
    cfg = _load(config, set_, given)
    _writes_to(out, "--out")
    result = validate_from_config(cfg, out)
    for gate in result.gates:
        typer.echo(f"validate: {'✓' if gate.passed else '✗'} {gate.describe()}")
    typer.echo(f"validate: report {out / VALIDATION_JSON}")
    if not result.passed:
        raise GateFailure("; ".join(g.describe() for g in result.failed_gates))


@command
def synth(
    out: Annotated[Path, typer.Argument(help="folder to write images/, labels/ and data.yaml into")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    classes: Annotated[
        str | None, typer.Option(help="comma-separated class names out of smoke,fire (synth.classes)")
    ] = None,
    train_images: Annotated[int | None, typer.Option(help="training images (synth.train_images)")] = None,
    val_images: Annotated[int | None, typer.Option(help="validation images (synth.val_images)")] = None,
    imgsz: Annotated[int | None, typer.Option(help="image side in pixels (synth.imgsz)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (synth.seed)")] = None,
    unlabeled: Annotated[
        int | None,
        typer.Option("--unlabeled", help="also N frames without labels in OUT/unlabeled (synth.unlabeled_images)"),
    ] = None,
    sequence: Annotated[
        bool, typer.Option("--sequence", help="instead: tower-camera sequences (fires and smoke-free distractors)")
    ] = False,
    sequences: Annotated[int, typer.Option(help="--sequence: sequences, every other one with a fire")] = 6,
    frames: Annotated[int, typer.Option(help="--sequence: frames per sequence")] = 40,
    width: Annotated[int, typer.Option(help="--sequence: frame width in pixels (tower cameras: 2048-3072)")] = 2048,
    interval: Annotated[float, typer.Option(help="--sequence: seconds between frames")] = 60.0,
    static_distractors: Annotated[
        bool,
        typer.Option(help="--sequence: a static smoke-like artefact in each view, drifting plumes, history/ frames"),
    ] = True,
    force: Annotated[bool, typer.Option(help="replace an earlier output of synth in OUT (nothing else)")] = False,
) -> None:
    """Write a deterministic synthetic smoke/fire dataset in YOLO format (or, --sequence, tower-camera sequences)."""
    from .synth import UNLABELED_DIR, synthesize
    from .synth_sequences import synthesize_sequences

    class_list = [c.strip() for c in classes.split(",")] if classes is not None else None
    given = {
        "classes": class_list,
        "train_images": train_images,
        "val_images": val_images,
        "imgsz": imgsz,
        "seed": seed,
        "unlabeled_images": unlabeled,
    }
    cfg = _load(config, set_, {f"synth.{key}": value for key, value in given.items()}).synth
    _writes_to(out, "OUT")
    if sequence:
        made = synthesize_sequences(out, sequences, frames, width, interval, cfg.seed, force, static_distractors)
        typer.echo(f"synth: wrote {len(made)} sequences of {frames} frames, {width} px wide, into {out}")
        return
    data_yaml = synthesize(out, cfg, force=force)
    pool = f" + {cfg.unlabeled_images} unlabelled frames in {out / UNLABELED_DIR}" if cfg.unlabeled_images else ""
    typer.echo(f"synth: wrote {cfg.train_images} train + {cfg.val_images} val images{pool}; dataset {data_yaml}")


@command
def export(
    weights: Annotated[str, typer.Option(help="student weights .pt (usually RUN/weights/best.pt)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default: RUN/export beside the weights)")] = None,
    imgsz: Annotated[int | None, typer.Option(help="static input size (export.imgsz; default: as trained)")] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (export.opset)")] = None,
    dynamic: Annotated[bool | None, typer.Option("--dynamic/--static", help="dynamic input axes")] = None,
    half: Annotated[bool | None, typer.Option("--half", help="also write an fp16 variant")] = None,
    int8: Annotated[bool | None, typer.Option("--int8", help="also write an int8 QDQ variant (needs --data)")] = None,
    data: Annotated[str | None, typer.Option(help="data.yaml whose val images calibrate int8 (train.data)")] = None,
    formats: Annotated[
        str | None, typer.Option(help="comma-separated: onnx (always), openvino, ncnn (export.formats)")
    ] = None,
    allow_unsafe_weights: UnsafeOpt = None,
) -> None:
    """Export the student to ONNX with metadata (+ optional fp16 / int8 variants, OpenVINO and NCNN folders)."""
    from .export import default_out
    from .export import export as run_export
    from .layout import EXPORT_REPORT

    given = {"export.imgsz": imgsz, "export.opset": opset, "export.dynamic": dynamic, "export.half": half}
    given |= {"export.int8": int8, "train.data": data, "train.allow_unsafe_weights": allow_unsafe_weights}
    given["export.formats"] = [f.strip() for f in formats.split(",")] if formats is not None else None
    cfg = _load(config, set_, given)
    out = out or default_out(weights)
    _writes_to(out, "--out")
    result = run_export(weights, out, cfg.export, data=cfg.train.data, **_student_pin(cfg))
    for f in result.files:
        detail = f"opset {f.opset}" if f.format == "onnx" else f.format
        typer.echo(f"export: {f.variant} {f.path} ({f.size_mb:.2f} MB, {detail}, sha256 {f.sha256[:12]}…)")
    typer.echo(f"export: report {out / EXPORT_REPORT}")


@command
def parity(
    weights: Annotated[str, typer.Option(help="student weights .pt the ONNX file was exported from")],
    onnx: Annotated[
        str, typer.Option("--model", "--onnx", help="ONNX file (any variant) or OpenVINO / NCNN folder to check")
    ],
    data: Annotated[str | None, typer.Option(help="data.yaml: real val images to compare on")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    images: Annotated[int | None, typer.Option("--n", help="real val images compared (parity.images)")] = None,
    imgsz: Annotated[int | None, typer.Option(help="input size (default: the ONNX metadata's)")] = None,
    fp32_onnx: Annotated[str | None, typer.Option(help="fp32 ONNX for the int8 mAP50 drop (default: beside)")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for parity.json (default: the ONNX file's)")] = None,
    allow_unsafe_weights: UnsafeOpt = None,
) -> None:
    """PyTorch vs an exported model in its camera runtime, same tensors; exit 1 when anything is out of tolerance."""
    from .config import image_size_option
    from .parity import parity as run_parity

    given = {"parity.images": images, "train.data": data, "train.allow_unsafe_weights": allow_unsafe_weights}
    cfg = _load(config, set_, given)
    onnx_path = Path(onnx)
    out = out or onnx_path.parent
    _writes_to(out, "--out")
    given = {"data": cfg.train.data, "imgsz": image_size_option(imgsz, "--imgsz"), "out": out, "fp32_onnx": fp32_onnx}
    result = run_parity(weights, onnx_path, cfg.parity, **given, **_student_pin(cfg))
    typer.echo(
        f"parity: {result.variant} {onnx_path} on {result.inputs['images']} images + "
        f"{result.inputs['random']} random tensors at {result.imgsz}px"
    )
    for line in [d.line() for d in result.tensors] + [result.detections.line()]:
        typer.echo(f"parity: {line}")
    if result.map50:
        typer.echo(
            f"parity: mAP50 fp32 {result.map50['fp32']:.4f}, {result.variant} "
            f"{result.map50[result.variant]:.4f}, drop {result.map50['drop']:.4f}"
        )
    typer.echo(f"parity: report {result.report}")
    if not result.passed:
        raise GateFailure("; ".join(result.problems))


@command
def build(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option(help="build folder; re-running on it skips unchanged stages")] = Path(
        "runs/build"
    ),
    data: DataOpt = None,
    teacher: TeacherOpt = None,
    student: StudentOpt = None,
    device: TrainDeviceOpt = None,
    allow_unsafe_weights: UnsafeOpt = None,
    teacher_modules: ModulesOpt = None,
    finetune: Annotated[
        bool | None, typer.Option("--finetune", help="finetune the teacher on the data first (finetune.enabled)")
    ] = None,
    unlabeled: UnlabeledOpt = None,
) -> None:
    """(finetune ->) train -> validate -> export -> parity into one folder; non-zero exit names what failed."""
    from .layout import BUILD_REPORT
    from .pipeline import build as run_build

    given = {"data": data, "teacher": teacher, "student": student, "device": device, "teacher_modules": teacher_modules}
    given |= {"allow_unsafe_weights": allow_unsafe_weights, "unlabeled": unlabeled}
    cfg = _load(config, set_, {f"train.{key}": value for key, value in given.items()} | {"finetune.enabled": finetune})
    _writes_to(out, "--out")
    result = run_build(cfg, out)
    _echo_build(result)
    typer.echo(f"build: report {out / BUILD_REPORT}")
    if not result.passed:
        raise GateFailure("; ".join(result.failures))


def _echo_build(result) -> None:
    for s in result.stages:
        typer.echo(f"build: {'✓' if s.passed else '✗'} {s.name} {s.status} ({s.seconds:.1f}s)")


@command
def demo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[str | None, typer.Option(help="output folder (demo.out)")] = None,
    device: Annotated[str | None, typer.Option(help="'cpu', '0', ... (demo.device)")] = None,
) -> None:
    """Synthetic data, a quick yolov8s teacher, then the distilled yolov8n student: CPU, minutes."""
    from .demo import run_demo
    from .layout import DEMO_REPORT

    cfg = _load(config, set_, {"demo.out": out, "demo.device": device})
    _writes_to(cfg.demo.out, "--out")
    result = run_demo(cfg)
    _echo_build(result.build)
    typer.echo(
        f"demo: finished in {result.seconds:.0f}s; build folder {result.build.out_dir}; report "
        f"{Path(result.out) / DEMO_REPORT}"
    )
    if not result.build.passed:
        raise GateFailure("; ".join(result.build.failures))


def detect(sources: list[str], onnx: str, config, set_, out: Path, sequence: bool, **options) -> None:
    """Run an exported model over images as a camera does (numpy, OpenCV, its runtime); --sequence raises alarms."""
    from .edge.detect import detect as run_detect
    from .edge.options import detect_keywords

    d = _load(config, set_, {f"detect.{key}": value for key, value in options.items()}).detect
    _writes_to(out, "--out")
    result = run_detect(onnx, sources, out, sequence=sequence, **detect_keywords(d.model_dump()))
    for warning in result.warnings:
        typer.echo(f"detect: warning: {warning}", err=True)
    typer.echo(f"detect: {result.summary()}")


def _detect_signature() -> inspect.Signature:
    """`detect`'s parameters: its own (sources, model, config, out, sequence), then edge/options.py's table, which
    `wildfire-kd-edge` is built from too: one table, so the two entry points take the same options."""
    from .edge.options import DETECT_OPTIONS, tiles_value

    def option_type(option):
        kinds = {"float": float, "int": int, "str": str, "flag": bool, "switch": bool, "tiles": str}
        return kinds[option.kind] | None

    def param(name, annotation, default=None):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    params = [
        inspect.Parameter("sources", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=Annotated[list[str], typer.Argument(help="images, folders or globs")]),
        param("onnx", Annotated[str, typer.Option("--model", "--onnx", help="a model file or folder from export")],
              inspect.Parameter.empty),
        param("config", ConfigOpt), param("set_", SetOpt),
        param("out", Annotated[Path, typer.Option(help="folder for detections.jsonl (and alerts.jsonl)")],
              Path("runs/detect")),
        param("sequence", Annotated[bool, typer.Option("--sequence", help="each folder is one camera's frames in "
                                                       "time order: raise alarms")], False),
    ]  # fmt: skip
    for option in DETECT_OPTIONS:
        flags = ("/".join(option.flags),) if option.kind == "switch" else option.flags
        flags = (f"{option.flags[0]}",) if option.kind == "flag" else flags
        extra = {"parser": tiles_value} if option.kind == "tiles" else {}
        help_text = f"{option.help} (detect.{option.dest})"
        annotated = Annotated[option_type(option), typer.Option(*flags, help=help_text, **extra)]
        params.append(param(option.dest, annotated))
    return inspect.Signature(params)


detect.__signature__ = _detect_signature()
detect = command(detect)


@app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def serve(ctx: typer.Context) -> None:
    """The camera service on the tower (`wildfire-kd serve --help`): the very command `wildfire-kd-edge serve` is, its
    options and all (one parser, so the two never drift apart)."""
    from .edge.cli import main as edge_main

    raise typer.Exit(edge_main(["serve", *ctx.args]))


image_app = typer.Typer(help="Build the container image, or run a pipeline command in it with all GPUs.")
app.add_typer(image_app, name="image")


@image_app.command("build")
@_handle_errors
def image_build(
    context: Annotated[Path, typer.Option(help="the wildfire-kd checkout (holds the Dockerfile)")] = Path("."),
    tag: Annotated[str | None, typer.Option(help="image tag (default wildfire-kd:VERSION-COMMIT)")] = None,
    base_image: Annotated[str | None, typer.Option(help="override the Dockerfile's BASE_IMAGE")] = None,
    network: Annotated[str | None, typer.Option(help="build network, e.g. host (pip needs one)")] = None,
    target: Annotated[
        str, typer.Option(help="pipeline (wildfire-kd) or edge (wildfire-kd-edge: the camera runtime alone)")
    ] = "pipeline",
    runtime: Annotated[
        str | None,
        typer.Option(help="edge: its one inference runtime, onnxruntime (default), openvino (Intel) or ncnn (ARM)"),
    ] = None,
) -> None:
    """Build the image through the Docker SDK, tagged with the version and git commit (and latest)."""
    from .container import build as build_image

    tags = build_image(context, tag=tag, base_image=base_image, network_mode=network, target=target, runtime=runtime)
    typer.echo(f"image build: {', '.join(tags)}")


@image_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_handle_errors
def image_run(
    ctx: typer.Context,
    image: Annotated[str | None, typer.Option(help="image to run (default wildfire-kd:latest)")] = None,
    data: Annotated[Path | None, typer.Option(help="dataset folder, mounted read-only at /data")] = None,
    weights: Annotated[Path | None, typer.Option(help="weights folder, mounted read-only at /weights")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder, mounted at /out")] = Path("runs/container"),
    gpus: Annotated[bool, typer.Option("--gpus/--no-gpus", help="request all GPUs")] = True,
    network: Annotated[str | None, typer.Option(help="container network, e.g. none")] = None,
    user: Annotated[str | None, typer.Option(help="UID:GID to run as (default: yours)")] = None,
) -> None:
    """Run `wildfire-kd ARGS...` in the container: `image run --data D --weights W -- build --data /data/data.yaml`."""
    from .container import parse_user, run, run_request

    if not ctx.args:
        raise typer.BadParameter("give the command to run after --, e.g. -- train --data /data/data.yaml")
    ids = parse_user(user)
    request = run_request(ctx.args, image=image, data=data, weights=weights, out=out, gpus=gpus, network=network, **ids)
    code = run(request)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
