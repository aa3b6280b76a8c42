"""The config reference: one entry per config key, with its type, default and meaning, read from
the schema's field metadata. `describe` renders it for `--help`; `raylane.config.reference`
renders the same entries as the README's table."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterator
from typing import Any

from raylane.config.loading import type_name
from raylane.config.schema import PipelineConfig

_SCHEMA_MODULE = "raylane.config.schema."


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One config key. A section (`train`, `train.lora`) has no type or default of its own; keys
    inside a list or mapping of records are named `evaluate.slices[].name`, `sweep.space.<key>.kind`."""

    key: str
    type: str
    default: str
    help: str
    section: bool = False


def keys(cls: type = PipelineConfig, prefix: str = "") -> Iterator[KeyDoc]:
    """Every key of `cls`, depth first, in the schema's order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, help_text = hints[f.name], f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            yield KeyDoc(f"{prefix}{f.name}", "", "", help_text, section=True)
            yield from keys(tp, f"{prefix}{f.name}.")
            continue
        yield KeyDoc(f"{prefix}{f.name}", _type_label(tp), _default_label(_default(f)), help_text)
        # A list or mapping of records (slices, search dimensions): their fields are keys too.
        args = typing.get_args(tp)
        if args and dataclasses.is_dataclass(args[-1]):
            inner = f"{prefix}{f.name}[]." if typing.get_origin(tp) is list else f"{prefix}{f.name}.<key>."
            yield from keys(args[-1], inner)


def describe(cls: type = PipelineConfig, prefix: str = "") -> list[str]:
    """One line per key: the --help reference."""
    return [
        f"{k.key}: {k.help}" if k.section else f"  {k.key} ({k.type}) = {k.default}\n      {k.help}"
        for k in keys(cls, prefix)
    ]


def _default(f: dataclasses.Field) -> Any:
    # From the field, not an instance: a record such as a slice has no valid default instance.
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _default_label(value: Any) -> str:
    # JSON is YAML: what a config file or a key=value override would say (false, null, [a, b]).
    return json.dumps(_to_plain(value))


def _type_label(tp: Any) -> str:
    return type_name(tp).replace(_SCHEMA_MODULE, "")


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value
