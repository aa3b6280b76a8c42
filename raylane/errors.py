"""The error a bad config raises: a leaf, so that whatever checks a setting (the config itself,
a task, a model loader) names the key at fault without importing the config."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config problem, found before any compute starts. `key` is the dotted key at fault."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}" if key else message)
