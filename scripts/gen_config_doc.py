"""Write a documented config YAML from the typed config: `key: value  # (type) meaning`, one line each.

    python scripts/gen_config_doc.py > configs/student_model_cfg.yaml

tests/test_config.py checks that configs/student_model_cfg.yaml states exactly the defaults and documents every key.
"""

from __future__ import annotations

import sys
import typing

import yaml
from pydantic import BaseModel

from wildfire_kd.config import Config


def _type_name(annotation) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("NoneType", "None")


def _keys(model: BaseModel, indent: str) -> list[str]:
    """One documented line per key; a nested section (parity.fp16) gets a header line and its keys indented."""
    lines = []
    for key, info in type(model).model_fields.items():
        value = getattr(model, key)
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{key}:  # ({type(value).__name__}) {info.description}")
            lines += _keys(value, indent + "  ")
            continue
        shown = yaml.safe_dump(model.model_dump(mode="json")[key], default_flow_style=True, width=1000).strip()
        shown = shown.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"{indent}{key}: {shown}  # ({_type_name(info.annotation)}) {info.description}")
    return lines


def render(config: Config, header: str) -> str:
    lines = [header]
    for section in type(config).model_fields:
        model = getattr(config, section)
        lines.append(f"\n{section}:  # {(type(model).__doc__ or '').strip().splitlines()[0]}")
        lines += _keys(model, "  ")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(
        render(
            Config(),
            "# wildfire-kd train --config configs/student_model_cfg.yaml --data DATA.yaml --teacher TEACHER.pt\n"
            "# The first spec's training settings; every default of the typed config (wildfire_kd/config.py).",
        )
    )
