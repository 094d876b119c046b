"""The `wildfire_kd.*` metadata of a model file: the one reader and writer (export writes it, the camera reads it).

Each key is stored as ``wildfire_kd.<key>`` with a JSON value, in the ONNX file's metadata_props (and in the same
form wherever another format keeps string metadata). Reading checks the values a camera relies on, so a file with
broken metadata is refused as bad input (exit 2) instead of failing somewhere inside the runtime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import InputError

META_PREFIX = "wildfire_kd."


def encode(metadata: Mapping[str, Any]) -> dict[str, str]:
    """``{key: value}`` -> ``{"wildfire_kd.key": JSON text}``."""
    return {META_PREFIX + key: json.dumps(value) for key, value in metadata.items()}


def decode(props: Mapping[str, str], source: object = "the model file") -> dict[str, Any]:
    """Our keys of a file's string metadata, JSON-decoded; other keys are ignored. Text that is not JSON: exit 2."""
    decoded: dict[str, Any] = {}
    for key, text in props.items():
        if not key.startswith(META_PREFIX):
            continue
        try:
            decoded[key[len(META_PREFIX) :]] = json.loads(text)
        except (TypeError, ValueError):
            raise InputError(
                f"{source}: metadata {key} is not JSON ({str(text)[:60]!r}); the file was not written by "
                "`wildfire-kd export` or was edited: export it again"
            ) from None
    return decoded


def write_onnx(model, metadata: Mapping[str, Any]) -> None:
    """Replace our keys in an onnx.ModelProto's metadata_props with ``metadata`` (others are kept)."""
    keep = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in encode(metadata).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def read_onnx(model, source: object = "the ONNX model") -> dict[str, Any]:
    """Our metadata of an onnx.ModelProto, JSON-decoded."""
    return decode({p.key: p.value for p in model.metadata_props}, source)


def imgsz_of(metadata: Mapping[str, Any], source: object) -> int:
    """The square input size the metadata names (``imgsz: [S, S]``): a positive multiple of 32, else exit 2."""
    value = metadata.get("imgsz")
    sizes = value if isinstance(value, list) else [value]
    size = sizes[0] if sizes else None
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0 and size % 32 == 0):
        raise InputError(
            f"{source}: metadata wildfire_kd.imgsz is {value!r}, not [S, S] with S a multiple of 32; export it again"
        )
    return size


def names_of(metadata: Mapping[str, Any], source: object) -> list[str]:
    """The class names the metadata names: a non-empty list of strings, else exit 2."""
    value = metadata.get("names")
    if not (isinstance(value, list) and value and all(isinstance(n, str) for n in value)):
        raise InputError(f"{source}: metadata wildfire_kd.names is {value!r}, not a list of class names")
    return list(value)


# --- the seal: what export wrote, unedited -------------------------------------------------------------------------

SEAL_KEY = "seal"  # metadata {"sha256": ..., "files": [...]}: the model's files as export wrote them
_UNSEALED = "0" * 64  # the digest's place while the digest is computed (the same length: nothing else moves)


def sealed_digest(files: dict[str, bytes]) -> str:
    """sha256 over each file's name and bytes, in name order, the seal's digest replaced by _UNSEALED first: a file
    can carry its own digest (its metadata) and still be checked against it."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def seal_value(names: list[str], digest: str = _UNSEALED) -> dict[str, Any]:
    return {"sha256": digest, "files": sorted(names)}


def unsealed(data: bytes, digest: str) -> bytes:
    """``data`` with its seal's digest put back to _UNSEALED (as it was when the digest was computed)."""
    return data.replace(digest.encode(), _UNSEALED.encode())


def check_seal(metadata: Mapping[str, Any], model, source: object) -> bool:
    """True when the model's files are what export sealed; False when it carries no seal (an earlier export). Edited
    metadata or weights: exit 2. ``model``: the file (a one-file model: its name may have changed since) or the
    folder holding the sealed files."""
    from pathlib import Path

    seal = metadata.get(SEAL_KEY)
    if seal is None:
        return False
    if not (isinstance(seal, dict) and isinstance(seal.get("sha256"), str) and isinstance(seal.get("files"), list)):
        raise InputError(f"{source}: metadata wildfire_kd.seal is {seal!r}, not export's; export it again")
    model = Path(model)

    def where(name: str) -> Path:
        return model if model.is_file() else model / name

    try:
        files = {name: unsealed(where(name).read_bytes(), seal["sha256"]) for name in seal["files"]}
    except OSError as e:
        raise InputError(f"{source}: a file export sealed is gone or unreadable ({e}); export it again") from None
    if sealed_digest(files) != seal["sha256"]:
        raise InputError(
            f"{source}: its files or metadata changed after export (the operating point, the input size, the "
            "weights…): a camera would run it on values nobody checked; export it again rather than edit it"
        )
    return True
