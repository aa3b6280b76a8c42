"""API keys for the HTTP API: read once per replica from an environment variable (comma
separated) or a secret file (one per line), kept only as SHA-256 digests, and compared in
constant time. The keys never enter a config, a log line or an MLflow param; only where to find
them does."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from contextvars import ContextVar
from pathlib import Path

from raylane.config import ConfigError


def load_keys(env_name: str = "", file: str = "") -> tuple[str, ...]:
    """Every configured key; empty when auth is off. A named source that holds no key is an
    error: serving without auth because a secret failed to mount must not happen quietly."""
    keys: list[str] = []
    if env_name:
        keys += [k.strip() for k in os.environ.get(env_name, "").split(",") if k.strip()]
        if not keys:
            raise ConfigError("serve.api_keys_env", f"names ${env_name}, which is unset or empty")
    if file:
        try:
            lines = Path(file).expanduser().read_text().splitlines()
        except OSError as err:
            raise ConfigError("serve.api_keys_file", f"cannot read {file} ({err.strerror})") from None
        from_file = [line.strip() for line in lines if line.strip()]
        if not from_file:
            raise ConfigError("serve.api_keys_file", f"{file} holds no key")
        keys += from_file
    return tuple(keys)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@functools.lru_cache(maxsize=8)
def key_digests(env_name: str = "", file: str = "") -> tuple[bytes, ...]:
    """The keys' SHA-256 digests, loaded once per process and source: a comparison then takes the
    same time whatever a key's length, and the keys themselves are not held for a replica's life."""
    return tuple(_digest(key) for key in load_keys(env_name, file))


def presented_key(header: str | None, digests: tuple[bytes, ...]) -> bytes | None:
    """The digest of the key that `Authorization: Bearer <key>` presents, if it is one of
    `digests` (b"" when there are none: auth is off), else None. Every digest is compared, each
    in constant time, so timing does not tell which key came close."""
    if not digests:
        return b""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    presented = _digest(token.strip())
    matches = [hmac.compare_digest(presented, digest) for digest in digests]
    return presented if any(matches) else None


def bearer_matches(header: str | None, digests: tuple[bytes, ...]) -> bool:
    """`Authorization: Bearer <key>` against every digest (`presented_key`). No digests: auth is off."""
    return presented_key(header, digests) is not None


def client_of(scope: dict) -> str | None:
    """Who sent a request, for sticky canary routing: its API key (as a digest; the guard has
    checked it already), else its X-Request-Id header; None when it says neither."""
    headers = dict(scope.get("headers") or ())
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return _digest(token.strip()).hex()
    request_id = headers.get(b"x-request-id", b"").decode("latin-1").strip()
    return request_id or None


# The client of the request being handled, set by the request guard (raylane.serve.guard) for the
# route under it: what sticky canary routing reads.
CLIENT: ContextVar[str | None] = ContextVar("raylane_client", default=None)


def current_client() -> str | None:
    """The client of the request being handled (`CLIENT`); a function, as a ContextVar itself
    cannot travel to the replicas with the deployment class that reads it."""
    return CLIENT.get()
