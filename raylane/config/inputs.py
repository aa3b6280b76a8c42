"""Input checks that need the file system, still before any compute: a missing data file or model
directory fails in a second, naming its key."""

from __future__ import annotations

import glob
from pathlib import Path

from raylane.config.schema import PipelineConfig
from raylane.errors import ConfigError
from raylane.locations import REMOTE_SCHEMES, resolve_input


def check_data_inputs(cfg: PipelineConfig) -> None:
    """Fail fast, naming the key, when a local input the run needs is missing."""
    for key, value in (("data.source", cfg.data.source), ("data.test_source", cfg.data.test_source)):
        if not value or value.startswith(REMOTE_SCHEMES):
            continue
        if not glob.glob(resolve_input(value)):
            raise ConfigError(key, f"no file matches '{value}' (from {Path.cwd()})")


def check_model_input(cfg: PipelineConfig) -> None:
    name = cfg.model.name_or_path
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not Path(resolve_input(name)).is_dir():
        raise ConfigError("model.name_or_path", f"no model directory at '{name}'")
