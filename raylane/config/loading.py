"""From YAML to the typed tree: read the file, apply dotted overrides, expand `${VAR}`, and
check every key and type, naming the dotted key of the first problem."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from raylane.config.env import expand_env
from raylane.config.schema import ConfigError, PipelineConfig
from raylane.resources import find_config, packaged


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from `raw`, naming the dotted key of the first problem found."""
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip("."), f"expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"{prefix}{key}", f"unknown key{hint}")
    values = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except ConfigError as err:  # __post_init__ knows the field, not where the section sits
        raise ConfigError(f"{prefix}{err.key}", str(err).split(": ", 1)[1]) from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(key, f"expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(key, f"expected {type_name(tp)}, got {value!r} ({type(value).__name__})")


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(map(repr, typing.get_args(tp)))
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set a dotted `key=value` on the raw YAML tree; the value is parsed as YAML ("3", "true", "[a, b]"),
    or taken as the text it is where it is not YAML."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(override, "an override must look like key=value, e.g. train.lr=3e-5")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(key, f"'{part}' is a value, not a section")
        node = child
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text  # not YAML ("Title: {title}" on two lines): the text itself, type-checked as any value
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load a YAML file (the embedded default when `path` is None; a name that is not a file here
    may be one of the configs shipped with raylane), apply overrides, type-check all."""
    found = find_config(str(path)) if path else packaged("configs/default.yaml")
    if found is None:
        raise ConfigError("", f"config file not found: {path} (nor among raylane's own configs)")
    try:
        raw = yaml.safe_load(found.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("", f"{found} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError("", f"{found} must hold a mapping of sections, not {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    cfg = from_dict(PipelineConfig, expand_env(raw))
    # Absolute from here on: Tune runs each trial in a working directory of its own, where a
    # relative output_dir would point somewhere else.
    storage = cfg.train.storage_path
    if storage and "://" not in storage:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, storage_path=_absolute(storage)))
    if cfg.train.metric == "auto":  # the task's own ranking metric, so every stage sees a real name
        from raylane.tasks import get_task

        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, metric=get_task(cfg.task).resolve_metric("auto"))
        )
    return dataclasses.replace(cfg, output_dir=_absolute(cfg.output_dir))


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())
