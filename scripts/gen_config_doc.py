"""Write a documented config YAML from the typed config: `key: value  # (type) meaning`, one line each.

    python scripts/gen_config_doc.py > configs/student_model_cfg.yaml

tests/test_config.py checks that configs/student_model_cfg.yaml states exactly the defaults and documents every key.
"""

from __future__ import annotations

import sys
import typing

import yaml

from wildfire_kd.config import Config


def _type_name(annotation) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("NoneType", "None")


def render(config: Config, header: str) -> str:
    lines = [header]
    data = config.model_dump(mode="json")
    for section, fields in data.items():
        model = type(getattr(config, section))
        lines.append(f"\n{section}:  # {(model.__doc__ or '').strip().splitlines()[0]}")
        for key, value in fields.items():
            info = model.model_fields[key]
            shown = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
            shown = shown.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"  {key}: {shown}  # ({_type_name(info.annotation)}) {info.description}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(
        render(
            Config(),
            "# wildfire-kd train --config configs/student_model_cfg.yaml --data DATA.yaml --teacher TEACHER.pt\n"
            "# The seed's training settings; every default of the typed config (wildfire_kd/config.py), one per line.",
        )
    )
