"""The options of `detect`, written once: `wildfire-kd-edge` (argparse) and `wildfire-kd detect` (typer, with
--config and --set) are both built from this table, so the two entry points never drift apart. Each option's
``dest`` is also its key in the config's ``detect`` section and, but for the alarm rule's fields, detect()'s keyword.
Options left out (None) keep detect()'s defaults, which are the config's (tests/test_edge_imports.py checks both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import AUTO
from .runtimes import RUNTIMES


def tiles_value(text: str) -> int | str:
    """--tiles: a number, or auto; anything else is bad input (a ValueError each parser turns into its usage error)."""
    if text == AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--tiles {text!r}: a number of tiles, or {AUTO}") from None


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]  # a switch: ("--static", "--no-static")
    dest: str
    kind: str  # "float", "int", "str", "flag" (on when given), "switch" (--x / --no-x), "tiles"
    help: str
    choices: tuple[str, ...] | None = None
    group: str = ""  # where --help lists it
    required: bool = False


RULE = "alarm rule (each left out: the model file's rule, else summed confidence 1.25 over 5 frames, floor 0.1)"
CAMERA = "--sequence: the camera path around the alarm rule"

DETECT_OPTIONS: tuple[Option, ...] = (
    Option(("--conf",), "conf", "float", "confidence threshold (default: the model's operating point)"),
    Option(("--iou",), "iou", "float", "NMS IoU threshold (default 0.7)"),
    Option(
        ("--runtime",), "runtime", "str", "onnxruntime, openvino or ncnn (default: from the model)", tuple(RUNTIMES)
    ),
    Option(("--threads",), "threads", "int", "inference threads (default: the runtime's)"),
    Option(
        ("--tiles",),
        "tiles",
        "tiles",
        "tiles along the longer side besides the whole frame: N, or auto "
        "(default: the model's camera profile, else auto)",
    ),  # fmt: skip
    Option(("--save-images",), "save_images", "flag", "also write annotated copies into OUT/images/"),
    Option(
        ("--alarm-mode",),
        "alarm_mode",
        "str",
        "k of n frames (count), or summed confidence (score)",
        ("count", "score"),
        RULE,
    ),  # fmt: skip
    Option(("--alarm-k",), "alarm_k", "int", "count: alarm when confirmed in k ...", group=RULE),
    Option(("--alarm-n",), "alarm_n", "int", "... of the last n frames", group=RULE),
    Option(("--alarm-threshold",), "alarm_threshold", "float", "score: summed confidence that alarms", group=RULE),
    Option(("--alarm-floor",), "alarm_floor", "float", "per-frame confidence the alarm still sees", group=RULE),
    Option(("--alarm-iou",), "alarm_iou", "float", "overlap that counts as the same object", group=RULE),
    Option(("--alarm-release",), "alarm_release", "float", "hysteresis: fraction of the trigger", group=RULE),
    Option(
        ("--static", "--no-static"), "static", "switch", "suppress detections that stay put (default on)", group=CAMERA
    ),  # fmt: skip
    Option(
        ("--events", "--no-events"),
        "events",
        "switch",
        "one event per fire, not an alert per alarm (default on)",
        group=CAMERA,
    ),  # fmt: skip
    Option(
        ("--static-memory",),
        "static_memory",
        "str",
        "the cameras' static memories: read, then written back",
        group=CAMERA,
    ),  # fmt: skip
    Option(
        ("--learn-static",),
        "learn_static",
        "str",
        "each camera's smoke-free frames (a folder per camera): static from the start",
        group=CAMERA,
    ),  # fmt: skip
)


def detect_keywords(values: dict[str, Any]) -> dict[str, Any]:
    """detect()'s keywords from the options' values (None: not given, detect()'s default): the alarm rule's fields
    gathered into ``alarm``."""
    from .alarms import AlarmRule

    rule = {f: values.get(f"alarm_{f}") for f in AlarmRule.__dataclass_fields__}
    keywords = {o.dest: values.get(o.dest) for o in DETECT_OPTIONS if not o.dest.startswith("alarm_")}
    keywords = {k: v for k, v in keywords.items() if v is not None}
    return {**keywords, "alarm": {k: v for k, v in rule.items() if v is not None}}


SERVE = "the service"
SERVE_OPTIONS: tuple[Option, ...] = (
    Option(
        ("--cameras",),
        "cameras",
        "str",
        "cameras.yaml: the cameras (id, source, interval, mask, tiles) and the delivery",
        group=SERVE,
        required=True,
    ),  # fmt: skip
    Option(
        ("--model",),
        "model",
        "str",
        "student.onnx, or an OpenVINO / NCNN folder, from `wildfire-kd export`",
        group=SERVE,
        required=True,
    ),  # fmt: skip
    Option(
        ("--state",),
        "state",
        "str",
        "the service's own folder: the cameras' state and the alerts' outbox "
        "(SQLite), alerts.jsonl; one service at a time",
        group=SERVE,
        required=True,
    ),  # fmt: skip
    Option(
        ("--webhook",),
        "webhook",
        "str",
        "an http(s) URL each alert is POSTed to as JSON until acknowledged (default: cameras.yaml's delivery.webhook)",
        group=SERVE,
    ),  # fmt: skip
    Option(
        ("--host",), "host", "str", "address of /healthz and /metrics (default 127.0.0.1: this box only)", group=SERVE
    ),  # fmt: skip
    Option(("--port",), "port", "int", "port of /healthz and /metrics (default 9108; 0: none)", group=SERVE),
    *(
        o
        for o in DETECT_OPTIONS
        if o.dest in ("conf", "iou", "runtime", "threads", "static", "events") or o.dest.startswith("alarm_")
    ),  # fmt: skip
)


def serve_keywords(values: dict[str, Any]) -> dict[str, Any]:
    """ServeOptions' fields from the options' values (None: not given, the default; --port 0: no /healthz)."""
    detect = detect_keywords(values)
    shared = {k: v for k, v in detect.items() if k in {"conf", "iou", "runtime", "threads", "static", "events"}}
    own = {o.dest: values.get(o.dest) for o in SERVE_OPTIONS if o.group == SERVE}
    own = {k: v for k, v in own.items() if v is not None}
    if own.get("port") == 0:
        own["port"] = None
    return {**own, **shared, "alarm": detect["alarm"]}
