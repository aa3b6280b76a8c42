"""`${VAR}` and `${VAR:-default}` in config values, from the environment: how a cluster config
takes its bucket or server address without writing it down.

Each value is expanded once. A default may hold references of its own
(`${RAYLANE_DATA:-${RAYLANE_STORAGE}/raw/*.csv}`), but what a variable holds is used as it is and
never scanned again: a value that happens to contain `${...}` cannot pull in other variables.
What a variable holds is remembered by `raylane.redact`, which masks it wherever it is recorded.
"""

from __future__ import annotations

import os
import re
from typing import Any

from raylane.errors import ConfigError
from raylane.redact import remember

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_env(raw: Any, key: str = "") -> Any:
    """The YAML tree with every reference in its string values expanded. An unset variable
    without a default names the key that uses it."""
    if isinstance(raw, dict):
        return {k: expand_env(v, f"{key}.{k}" if key else str(k)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [expand_env(v, f"{key}[{i}]") for i, v in enumerate(raw)]
    if not isinstance(raw, str) or "${" not in raw:
        return raw
    return _Template(raw, key).expand()


class _Template:
    """A recursive-descent reading of one value: text, `${NAME}`, `${NAME:-default}`."""

    def __init__(self, text: str, key: str):
        self.text, self.key, self.at = text, key, 0

    def expand(self) -> str:
        return self._until(end=None, wanted=True)

    def _until(self, end: str | None, wanted: bool) -> str:
        """Text up to `end` (a default's closing brace) or the end of the value. `wanted` False
        walks a default that is not used, without looking its references up."""
        out: list[str] = []
        while self.at < len(self.text):
            if end and self.text.startswith(end, self.at):
                self.at += len(end)
                return "".join(out)
            if self.text.startswith("${", self.at) and _NAME.match(self.text, self.at + 2):
                self.at += 2
                out.append(self._reference(wanted))
            else:
                out.append(self.text[self.at])
                self.at += 1
        if end:
            raise ConfigError(self.key, f"unclosed '${{' in {self.text!r}")
        return "".join(out)

    def _reference(self, wanted: bool) -> str:
        name = _NAME.match(self.text, self.at).group()
        self.at += len(name)
        if self.text.startswith("}", self.at):
            self.at += 1
            default = None
        elif self.text.startswith(":-", self.at):
            self.at += 2
            default = self._until("}", wanted and name not in os.environ)
        else:
            raise ConfigError(
                self.key, f"malformed reference to {name} in {self.text!r}: write ${{{name}}} or ${{{name}:-default}}"
            )
        if not wanted:
            return ""
        if name in os.environ:
            remember([os.environ[name]])  # masked by value in whatever raylane records (a secret, maybe)
            return os.environ[name]
        if default is None:
            raise ConfigError(
                self.key, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)"
            )
        return default
