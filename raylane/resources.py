"""What raylane ships beside its code: the configs (`configs/*.yaml`) and the embedded datasets
(`data/...`). They are package data (`raylane.configs`, `raylane.data`), found through
importlib.resources, so the embedded defaults run wherever raylane is installed, from any
working directory, and the same from a source checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED = ("configs", "data")


def packaged(relative: str) -> Path | None:
    """`configs/<name>` or `data/<path>` inside the installed package (None for anything else).
    The path may not exist: callers glob it."""
    head, _, rest = relative.replace("\\", "/").lstrip("./").partition("/")
    if head not in SHIPPED or not rest:
        return None
    return Path(resources.files(f"raylane.{head}").joinpath(rest))


def find_config(name: str) -> Path | None:
    """A config file: the path as given (from the working directory), else one of raylane's own
    configs by its path under `configs/` or its bare file name (`digits.yaml`)."""
    given = Path(name).expanduser()
    if given.is_file():
        return given
    for candidate in (packaged(name), packaged(f"configs/{given.name}")):
        if candidate is not None and candidate.is_file():
            return candidate
    return None
