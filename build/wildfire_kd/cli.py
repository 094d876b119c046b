"""The `wildfire-kd` command line: parse, call one library function, map errors to exit codes.

Exit codes: 0 success, 1 a quality gate failed, 2 bad input or configuration (one line, no traceback).
Nothing heavy is imported at module level, so `--help` never imports torch or ultralytics.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import GateFailure, WildfireKDError

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
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override one key, e.g. --set train.lr0=0.01 (repeatable)"),
]


def _handle_errors(fn):
    """Turn our typed errors into their exit codes with a one-line reason."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WildfireKDError as e:
            typer.echo(f"wildfire-kd {fn.__name__}: error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo(f"wildfire-kd {fn.__name__}: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


@app.command()
@_handle_errors
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: Annotated[str | None, typer.Option(help="dataset data.yaml (train.data)")] = None,
    teacher: Annotated[str | None, typer.Option(help="teacher weights .pt (train.teacher)")] = None,
    student: Annotated[str | None, typer.Option(help="yolov8n.yaml or a yolov8n .pt (train.student)")] = None,
    out: Annotated[str | None, typer.Option(help="folder for the run folder (train.out)")] = None,
    name: Annotated[str | None, typer.Option(help="run folder name (train.name)")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs (train.epochs)")] = None,
    imgsz: Annotated[int | None, typer.Option(help="image size, multiple of 32 (train.imgsz)")] = None,
    batch: Annotated[int | None, typer.Option(help="batch size (train.batch)")] = None,
    device: Annotated[str | None, typer.Option(help="'cpu', '0', '0,1' (train.device)")] = None,
    resume: Annotated[str | None, typer.Option(help="resume a run: its folder or weights/last.pt")] = None,
) -> None:
    """Distil the teacher into a YOLOv8n student (the main job)."""
    from .config import load_config
    from .distill import train as run_train

    _setup_logging()
    cfg = load_config(
        config,
        set_ or [],
        train__data=data,
        train__teacher=teacher,
        train__student=student,
        train__out=out,
        train__name=name,
        train__epochs=epochs,
        train__imgsz=imgsz,
        train__batch=batch,
        train__device=device,
    )
    result = run_train(cfg, resume=resume)
    typer.echo(f"train: run folder {result.run_dir}; report {Path(result.run_dir) / 'train.json'}")
    typer.echo(f"train: best weights {result.best}")
    if result.validation is not None:
        typer.echo(f"train: student vs teacher report {result.validation['report']}")
        if not result.passed:
            raise GateFailure("; ".join(result.validation["failed_gates"]))


@app.command()
@_handle_errors
def validate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    student: Annotated[str | None, typer.Option(help="student weights .pt (default: train.student)")] = None,
    teacher: Annotated[str | None, typer.Option(help="teacher weights .pt (train.teacher)")] = None,
    data: Annotated[str | None, typer.Option(help="dataset data.yaml (train.data)")] = None,
    out: Annotated[Path, typer.Option(help="folder for validation.json/.md/.png")] = Path("runs/validate"),
    imgsz: Annotated[int | None, typer.Option(help="image size (validation.imgsz, else train.imgsz)")] = None,
    device: Annotated[str | None, typer.Option(help="'cpu', '0', ... (validation.device)")] = None,
) -> None:
    """Evaluate teacher and student on the same split; exit 1 when a gate fails."""
    from .config import load_config
    from .errors import InputError
    from .validate import JSON_NAME
    from .validate import validate as run_validate

    _setup_logging()
    cfg = load_config(
        config, set_ or [], train__student=student, train__teacher=teacher, train__data=data,
        validation__imgsz=imgsz, validation__device=device,
    )  # fmt: skip
    t, v = cfg.train, cfg.validation
    missing = [flag for flag, value in (("--teacher", t.teacher), ("--data", t.data)) if not value]
    if missing or not t.student.endswith(".pt"):
        missing += [] if t.student.endswith(".pt") else ["--student (a .pt file)"]
        raise InputError(f"validate needs {', '.join(missing)}")
    result = run_validate(
        t.student, t.teacher, t.data, v, out, imgsz=v.imgsz or t.imgsz,
        device=t.device if v.device is None else v.device,
        student_sha256=t.student_sha256, teacher_sha256=t.teacher_sha256,
    )  # fmt: skip
    for gate in result.gates:
        typer.echo(f"validate: {'✓' if gate.passed else '✗'} {gate.describe()}")
    typer.echo(f"validate: report {out / JSON_NAME}")
    if not result.passed:
        raise GateFailure("; ".join(g.describe() for g in result.failed_gates))


@app.command()
@_handle_errors
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
) -> None:
    """Write a deterministic synthetic smoke/fire dataset in YOLO format."""
    from .config import load_config
    from .data import synthesize

    cfg = load_config(
        config,
        set_ or [],
        synth__classes=[c.strip() for c in classes.split(",")] if classes else None,
        synth__train_images=train_images,
        synth__val_images=val_images,
        synth__imgsz=imgsz,
        synth__seed=seed,
    ).synth
    data_yaml = synthesize(out, cfg.classes, cfg.train_images, cfg.val_images, cfg.imgsz, cfg.max_objects, cfg.seed)
    typer.echo(f"synth: wrote {cfg.train_images} train + {cfg.val_images} val images; dataset {data_yaml}")


@app.command()
@_handle_errors
def demo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[str | None, typer.Option(help="output folder (demo.out)")] = None,
    device: Annotated[str | None, typer.Option(help="'cpu', '0', ... (demo.device)")] = None,
) -> None:
    """Synthetic data, a quick yolov8s teacher, then the distilled yolov8n student: CPU, minutes."""
    from .config import load_config
    from .demo import REPORT_NAME, run_demo

    _setup_logging()
    result = run_demo(load_config(config, set_ or [], demo__out=out, demo__device=device))
    key = "metrics/mAP50(B)"
    t, s = result.teacher.final_metrics.get(key, 0.0), result.student.final_metrics.get(key, 0.0)
    typer.echo(f"demo: teacher mAP50 {t:.3f}, student mAP50 {s:.3f} (retention {s / t if t else 0:.2f})")
    typer.echo(f"demo: finished in {result.seconds:.0f}s; report {Path(result.out) / REPORT_NAME}")
    if result.student.validation is not None:
        typer.echo(f"demo: student vs teacher report {result.student.validation['report']}")
    if not result.student.passed:
        raise GateFailure("; ".join(result.student.validation["failed_gates"]))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
