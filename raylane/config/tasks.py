"""Checks across sections that depend on the task: a key that means nothing for the configured
task, or a metric it does not compute, fails at load like any other bad value, naming the key.

Which keys belong to which task is the task's to say: each inputs half, target half and engine
declares the config keys it owns (`config_keys` in `raylane.tasks`); a key owned by some task is
refused when set for a task that does not own it."""

from __future__ import annotations

import dataclasses
import string
from typing import Any

from raylane.errors import ConfigError
from raylane.tasks import TASK_NAMES, TASKS, get_task


def check_task_settings(cfg) -> None:
    if cfg.task not in TASK_NAMES:
        raise ConfigError("task", f"must be one of {', '.join(map(repr, TASK_NAMES))}; got {cfg.task!r}")
    task = get_task(cfg.task)
    metric = cfg.train.metric
    if metric != "auto" and metric not in task.metrics:
        raise ConfigError(
            "train.metric", f"{cfg.task} ranks by one of {', '.join(task.metrics)} (or auto); got {metric!r}"
        )
    for key in sorted(task_specific_keys() - task.config_keys):
        if _is_set(cfg, key):
            owners = [t.name for t in TASKS.values() if key in t.config_keys]
            raise ConfigError(key, f"is for {', '.join(owners)}; the task is {cfg.task}")
    if cfg.data.prompt_template:
        _check_prompt_template(cfg.data.prompt_template, cfg.data.text_fields)


def task_specific_keys() -> frozenset[str]:
    """Every key that some task owns: the keys that mean nothing for the others."""
    return frozenset().union(*(t.config_keys for t in TASKS.values()))


def _is_set(cfg, key: str) -> bool:
    """Whether `key` differs from its default (every task-specific default is "off")."""
    section_name, name = key.split(".", 1)
    section = getattr(cfg, section_name)
    return getattr(section, name) != _default(type(section), name)


def _default(section: type, name: str) -> Any:
    found = next(f for f in dataclasses.fields(section) if f.name == name)
    return found.default_factory() if found.default_factory is not dataclasses.MISSING else found.default


def _check_prompt_template(template: str, fields: list[str]) -> None:
    """Every {name} of the template is a prompt column, and the template formats."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ConfigError("data.prompt_template", f"is not a format string: {err}") from None
    unknown = sorted(n for n in names if n not in fields)
    if unknown:
        raise ConfigError(
            "data.prompt_template",
            f"names {', '.join(map(repr, unknown))}, which data.text_fields does not hold ({', '.join(fields)})",
        )
