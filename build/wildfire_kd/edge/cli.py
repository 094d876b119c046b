"""`wildfire-kd-edge`: `detect` for the edge image, with argparse (numpy, OpenCV and one inference runtime).

The same detection as `wildfire-kd detect` without the full CLI's config file: the edge image ships neither typer
nor pydantic. Exit codes as the full CLI: 0, 2 bad input, 3 an internal error (one line; the traceback with
WILDFIRE_KD_DEBUG=1).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import DEBUG_ENV, INTERNAL_ERROR_EXIT, WildfireKDError
from .alarms import overrides_of
from .boxes import DEFAULT_IOU
from .detect import detect
from .runtimes import RUNTIMES


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
    parser.add_argument("--runtime", choices=tuple(RUNTIMES), default=None, help="default: from it")
    parser.add_argument("--conf", type=float, default=None, help="confidence threshold (default: the model's own)")
    parser.add_argument("--iou", type=float, default=DEFAULT_IOU, help="NMS IoU threshold")
    parser.add_argument("--out", default="detections", help="folder for detections.jsonl / alerts.jsonl")
    parser.add_argument("--sequence", action="store_true", help="frames of one camera in time order: raise alarms")
    alarm = parser.add_argument_group(
        "alarm rule (each left out: the model file's rule, else summed confidence 1.25 over 5 frames, floor 0.1)"
    )
    alarm.add_argument("--alarm-mode", choices=("count", "score"), default=None, help="k of n frames, or summed score")
    alarm.add_argument("--alarm-k", type=int, default=None, help="count: alarm when confirmed in k ...")
    alarm.add_argument("--alarm-n", type=int, default=None, help="... of the last n frames")
    alarm.add_argument("--alarm-threshold", type=float, default=None, help="score: summed confidence that alarms")
    alarm.add_argument("--alarm-floor", type=float, default=None, help="per-frame confidence the alarm still sees")
    alarm.add_argument("--alarm-iou", type=float, default=None, help="overlap that counts as the same object")
    alarm.add_argument("--alarm-release", type=float, default=None, help="hysteresis: fraction of the trigger")
    parser.add_argument("--save-images", action="store_true", help="also write annotated copies")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the runtime's)")
    parser.add_argument("--tiles", type=int, default=1, help="also N overlapping tiles along the longer side")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = detect(
            args.onnx,
            args.sources,
            args.out,
            conf=args.conf,
            iou=args.iou,
            sequence=args.sequence,
            alarm=overrides_of(args),
            save_images=args.save_images,
            threads=args.threads,
            tiles=args.tiles,
            runtime=args.runtime,
        )
    except WildfireKDError as e:
        print(f"wildfire-kd-edge: error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a bug, not the input: one line and exit 3, as the full CLI does
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
