"""Credentials out of what raylane records: a URI's `user:password@` and the query parameters
that carry tokens or signatures are replaced by `***` before a value reaches MLflow (params,
tags, artifacts), a manifest, a model card or the console.

Config values are expanded from `${VAR}` before anything runs, so a secret kept in the
environment would otherwise be written out wherever the resolved config is.
"""

from __future__ import annotations

import re
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


def redact(text: str) -> str:
    """`text` with the credentials in any URI inside it masked."""
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
