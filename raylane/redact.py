"""Credentials out of what raylane records: a URI's `user:password@` and the query parameters
that carry tokens or signatures are replaced by `***` before a value reaches MLflow (params,
tags, artifacts), a manifest, a model card or the console.

Config values are expanded from `${VAR}` before anything runs, so a secret kept in the
environment would otherwise be written out wherever the resolved config is; a pattern cannot
know a token from a run name. So every value a `${VAR}` took from the environment is also masked
by value, wherever it appears (`config.env` records them as it expands, `remember`). The record
is per process: a Ray worker gets it with the `RunRef` it logs through (`tracking.RunRef`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
# scheme://user:password@host (a pasted secret may hold "/" or "+"), or a bare token: scheme://token@host
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#@\s:]+:[^@\s]*|[^/?#@\s:]+)@")
# ?token=... &X-Amz-Signature=... &password=...: any parameter whose name says it is a secret.
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_.-]*(?:token|secret|password|passwd|signature|credential|api[_-]?key|"
    r"access[_-]?key|session|sig|auth)[A-Za-z0-9_.-]*))=(?P<value>[^&#\s\"']*)",
    re.IGNORECASE,
)


# Shorter values, numbers and YAML's true/false/null are settings, not credentials, and masking
# them would mask every "1" or "true" in the params (`${WORKERS:-1}`).
_MIN_CHARS = 4
_SETTING = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|true|false|null|none|yes|no|on|off", re.IGNORECASE)
# Sorted longest first, so that a value inside another is masked with it; rebound whole, never
# changed in place, so that a thread redacting while another remembers never sees it change.
_VALUES: tuple[str, ...] = ()


def remember(values: Iterable[str]) -> None:
    """Mask each of `values` (taken from the environment) wherever it appears, from now on."""
    global _VALUES
    forms = {form for value in values for form in (value, value.strip())}
    masked = {form for form in forms if len(form) >= _MIN_CHARS and not _SETTING.fullmatch(form)}
    if not masked <= set(_VALUES):
        _VALUES = tuple(sorted(masked | set(_VALUES), key=lambda v: (-len(v), v)))


def remembered() -> tuple[str, ...]:
    """The values masked by value (what a `RunRef` carries to the workers)."""
    return _VALUES


def redact(text: str) -> str:
    """`text` with every remembered value and the credentials in any URI inside it masked."""
    for value in remembered():
        if value in text:
            text = text.replace(value, MASK)
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}={MASK}", text)


def redacted(value: Any) -> Any:
    """`redact` applied to every string in a JSON-like value (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redacted(item) for item in value)
    return value
