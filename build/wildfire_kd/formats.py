"""OpenVINO and NCNN beside the ONNX file (export.formats): the runtimes camera teams actually use on Intel CPUs
and on ARM boards. ultralytics exports both offline (OpenVINO through `openvino`, NCNN through `pnnx`); each folder
gets our metadata in its `metadata.yaml` (ultralytics' keys kept, ours added; written as JSON, which YAML readers and
the camera runtime both read), and nothing ships unproven: `parity` checks every folder like the ONNX files.

Variants: OpenVINO fp32; bf16 (the same IR, run in bf16 where the CPU has it: 2x on this CPU, its own parity);
int8 (NNCF post-training quantization on the val images, as ultralytics does; needs `nncf`). NCNN fp32; fp16
(storage and arithmetic, for ARM).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .config import ExportSettings
from .edge import metadata as model_metadata
from .errors import InputError
from .guard import atomic_write_text
from .layout import MODEL_FOLDERS, MODEL_SIDECAR
from .onnx_files import ultralytics_export

PACKAGES = {"openvino": ("openvino",), "ncnn": ("ncnn", "pnnx")}  # what each format's export needs
INT8_PACKAGE = "nncf"


def variants(fmt: str, settings: ExportSettings) -> list[str]:
    """The precisions written for ``fmt`` under ``settings``."""
    if fmt == "openvino":
        return ["fp32"] + (["bf16"] if settings.half else []) + (["int8"] if settings.int8 else [])
    return ["fp32"] + (["fp16"] if settings.half else [])


def check_available(settings: ExportSettings) -> None:
    """Exit 2 now, naming the extra, when a format's packages are missing."""
    for fmt in settings.formats[1:]:
        needed = list(PACKAGES[fmt]) + ([INT8_PACKAGE] if fmt == "openvino" and settings.int8 else [])
        missing = [p for p in needed if importlib.util.find_spec(p) is None]
        if missing:
            raise InputError(
                f"export.formats asks for {fmt}, which needs {', '.join(missing)}: pip install 'wildfire-kd[{fmt}]'"
            )


def folder_digest(folder: Path) -> str:
    """sha256 over a model folder's files (their names and contents, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def write_sidecar(folder: Path, metadata: dict[str, Any]) -> None:
    """Our metadata into the folder's metadata.yaml, beside ultralytics' own keys (which its predictor reads)."""
    import yaml

    path = folder / MODEL_SIDECAR
    theirs = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    theirs = {k: v for k, v in (theirs or {}).items() if not str(k).startswith(model_metadata.META_PREFIX)}
    # sealed (edge/metadata.py): the folder's files with the seal's digest unset, hashed, then the digest set
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) + [MODEL_SIDECAR]
    sealed = {**metadata, model_metadata.SEAL_KEY: model_metadata.seal_value(sorted(set(names)))}
    text = json.dumps({**theirs, **model_metadata.encode(sealed)}, indent=1, default=str) + "\n"
    files = {n: (folder / n).read_bytes() for n in set(names) if n != MODEL_SIDECAR}
    digest = model_metadata.sealed_digest({**files, MODEL_SIDECAR: text.encode()})
    atomic_write_text(path, text.replace(model_metadata.seal_value([])["sha256"], digest))


# OpenVINO's converter and NNCF send usage telemetry (and keep a client id in ~/intel) unless the user opted out or
# they believe they run in CI; export must send nothing and write nothing outside its folder
_TELEMETRY_DECLINED = {"CI": "true", "NNCF_CI": "1"}


@contextlib.contextmanager
def _telemetry_declined():
    saved = {key: os.environ.get(key) for key in _TELEMETRY_DECLINED}
    os.environ.update(_TELEMETRY_DECLINED)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def install_folder(made: Path, target: Path, copy: bool = False) -> None:
    """``made`` (a finished model folder, anywhere) becomes ``target``: first whole beside it, then swapped in, so
    a failure (a full disk) leaves the previous ``target`` as it was."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(made, staging) if copy else shutil.move(made, staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def rerun_as(out: Path, fmt: str, source: str, variant: str, metadata: dict[str, Any]) -> Path:
    """A copy of the ``source`` variant's folder that the camera runs at ``variant`` (its metadata says so)."""
    target = out / MODEL_FOLDERS[(fmt, variant)]
    install_folder(out / MODEL_FOLDERS[(fmt, source)], target, copy=True)
    write_sidecar(target, {**metadata, "variant": variant, "format": fmt})
    return target


def export_format(
    weights: Path, fmt: str, variant: str, imgsz: int, out: Path, metadata: dict[str, Any], full: bool, data: str | None
) -> Path:
    """``weights`` as ``fmt`` at ``variant`` into OUT/<its folder name>, with our metadata; returns the folder.
    ``data``: a data.yaml (a mirror: ultralytics writes caches beside labels) whose val images calibrate int8."""
    target = out / MODEL_FOLDERS[(fmt, variant)]
    options: dict[str, Any] = {}
    if fmt == "ncnn":
        options["half"] = variant == "fp16"
    if variant == "int8":
        options.update(int8=True, data=data, fraction=1.0)
    with _telemetry_declined(), ultralytics_export(weights, fmt, imgsz, full, **options) as made:
        install_folder(made, target)
    for extra in target.glob("*.py"):  # ultralytics' usage example: not part of the model
        extra.unlink()
    write_sidecar(target, {**metadata, "variant": variant, "format": fmt})
    return target
