"""The `--help` reference: one entry per config key, with its type, default and meaning, read
from the schema's field metadata."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from raylane.config.loading import type_name
from raylane.config.schema import PipelineConfig


def describe(cls: type = PipelineConfig, prefix: str = "") -> list[str]:
    """One line per key: the --help reference."""
    lines = []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp, default = hints[f.name], getattr(defaults, f.name)
        if dataclasses.is_dataclass(tp):
            lines.append(f"{prefix}{f.name}: {f.metadata.get('help', '')}")
            lines.extend(describe(tp, f"{prefix}{f.name}."))
            continue
        if dataclasses.is_dataclass(type(default)) or (isinstance(default, dict) and default):
            default = json.dumps(_to_plain(default))
        lines.append(f"  {prefix}{f.name} ({type_name(tp)}) = {default!r}\n      {f.metadata.get('help', '')}")
    return lines


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value
