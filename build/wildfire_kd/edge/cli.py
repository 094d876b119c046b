"""`wildfire-kd-edge`: `detect` for the edge image, with argparse (numpy, OpenCV and one inference runtime).

The same detection as `wildfire-kd detect` without the full CLI's config file: the edge image ships neither typer
nor pydantic. Exit codes as the full CLI: 0, 2 bad input, 3 an internal error (one line; the traceback with
WILDFIRE_KD_DEBUG=1).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import DEBUG_ENV, INTERNAL_ERROR_EXIT, DiskFull, WildfireKDError
from ..guard import disk_full
from .detect import detect
from .options import DETECT_OPTIONS, SERVE_OPTIONS, detect_keywords, serve_keywords, tiles_value
from .serve import ServeOptions, serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wildfire-kd-edge",
        description="Run student.onnx over images as a camera. `wildfire-kd-edge serve --help`: the camera service.",
    )
    parser.add_argument("sources", nargs="+", help="images, folders or globs")
    parser.add_argument(
        "--model",
        "--onnx",
        dest="onnx",
        metavar="MODEL",
        required=True,
        help="student.onnx, or an OpenVINO / NCNN folder, from `wildfire-kd export`",
    )
    parser.add_argument("--out", default="detections", help="folder for detections.jsonl / alerts.jsonl")
    parser.add_argument("--sequence", action="store_true", help="frames of one camera in time order: raise alarms")
    _add(parser, DETECT_OPTIONS)
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wildfire-kd-edge serve",
        description="The camera service: frames from each camera every interval, alarms, alerts delivered without "
        "loss (SIGTERM: finishes the frame in hand, exits 143).",
    )
    _add(parser, SERVE_OPTIONS)
    return parser


def _add(parser: argparse.ArgumentParser, options) -> None:
    """The options of the table (options.py), each in its group: the same as `wildfire-kd`'s."""
    groups = {"": parser}
    for option in options:
        where = groups.get(option.group) or groups.setdefault(option.group, parser.add_argument_group(option.group))
        extra = {"required": True} if option.required else {}
        where.add_argument(*option.flags[:1], dest=option.dest, help=option.help, default=None, **extra,
                           **_kind(option))  # fmt: skip


def _kind(option) -> dict:
    if option.kind == "flag":
        return {"action": "store_const", "const": True}
    if option.kind == "switch":
        return {"action": argparse.BooleanOptionalAction}
    convert = {"float": float, "int": int, "str": str, "tiles": _tiles}[option.kind]
    return {"type": convert, "choices": option.choices} if option.choices else {"type": convert}


def _tiles(text: str) -> int | str:
    try:
        return tiles_value(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        args = _serve_parser().parse_args(argv[1:])
        return _run(lambda: serve(ServeOptions(**serve_keywords(vars(args)))), args.state)
    args = _parser().parse_args(argv)
    return _run(lambda: _detect(args), args.out)


def _detect(args) -> int:
    result = detect(args.onnx, args.sources, args.out, sequence=args.sequence, **detect_keywords(vars(args)))
    for warning in result.warnings:
        print(f"wildfire-kd-edge: warning: {warning}", file=sys.stderr)
    print(f"detect: {result.summary()}")
    return 0


def _run(command, out) -> int:
    """``command``'s exit code; our errors are their codes, a full disk 4, any other exception 3 (one line)."""
    try:
        return command()
    except WildfireKDError as e:
        print(f"wildfire-kd-edge: error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a bug, not the input: one line and exit 3, as the full CLI does
        if (full := disk_full(e, out)) is not None:  # unless the disk is full: the machine, exit 4
            print(f"wildfire-kd-edge: error: {full}", file=sys.stderr)
            return DiskFull.exit_code
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        print(
            f"wildfire-kd-edge: internal error (a bug, not your input): {type(e).__name__}: {e}; "
            f"{DEBUG_ENV}=1 shows the traceback",
            file=sys.stderr,
        )
        return INTERNAL_ERROR_EXIT
