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
from .options import DETECT_OPTIONS, detect_keywords, tiles_value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wildfire-kd-edge", description="Run student.onnx over images as a camera.")
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
    groups = {"": parser}
    for option in DETECT_OPTIONS:  # the same table as `wildfire-kd detect` (options.py)
        where = groups.get(option.group) or groups.setdefault(option.group, parser.add_argument_group(option.group))
        where.add_argument(*option.flags[:1], dest=option.dest, help=option.help, default=None, **_kind(option))
    return parser


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
    args = _parser().parse_args(argv)
    try:
        result = detect(args.onnx, args.sources, args.out, sequence=args.sequence, **detect_keywords(vars(args)))
    except WildfireKDError as e:
        print(f"wildfire-kd-edge: error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a bug, not the input: one line and exit 3, as the full CLI does
        if (full := disk_full(e, args.out)) is not None:  # unless the disk is full: the machine, exit 4
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
    for warning in result.warnings:
        print(f"wildfire-kd-edge: warning: {warning}", file=sys.stderr)
    print(f"detect: {result.summary()}")
    return 0
