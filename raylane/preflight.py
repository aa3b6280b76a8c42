"""Checks that fail a command in seconds, before any compute, when something it depends on is
out of reach: the MLflow tracking server, the Ray cluster in $RAY_ADDRESS, and the storage it
writes to. Without them, each fails minutes in (Ray retries a dead address for a minute; a
checkpoint write fails at the end of the first epoch)."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import requests

from raylane.config import PipelineConfig

TIMEOUT_S = 5.0


class PreflightError(RuntimeError):
    """Something the command needs is unreachable or unwritable; the message names it."""


def check_tracking_server(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return  # a local store (sqlite:, file:) is created on first use
    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=TIMEOUT_S)
        response.raise_for_status()
    except requests.RequestException as err:
        raise PreflightError(
            f"MLflow tracking server {uri} is unreachable ({type(err).__name__}); start it, or fix "
            "tracking.uri / $MLFLOW_TRACKING_URI"
        ) from None


def check_ray_address(address: str | None) -> None:
    """A TCP connect to the GCS (host:port or ray://host:port). 'auto'/'local' are Ray's own to resolve."""
    if not address or address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise PreflightError(f"$RAY_ADDRESS={address!r} is not host:port (or ray://host:port)")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=TIMEOUT_S):
            pass
    except OSError as err:
        raise PreflightError(
            f"Ray cluster at $RAY_ADDRESS={address} is unreachable ({err.strerror or err}); "
            "start it (`ray start --head`) or unset RAY_ADDRESS for a local Ray"
        ) from None


def check_writable(key: str, uri: str) -> None:
    """Create the directory and write, then delete, a small file in it."""
    from raylane.sources import filesystem

    probe = f"{uri.rstrip('/')}/.raylane-write-check-{uuid.uuid4().hex[:8]}"
    try:
        fs, path = filesystem(probe)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(b"ok")
        fs.delete_file(path)
    except (OSError, ValueError) as err:
        raise PreflightError(f"config key '{key}': cannot write to {uri} ({err})") from None


def storage_locations(cfg: PipelineConfig, command: str) -> dict[str, str]:
    """The places `command` writes to, by config key."""
    places = {"output_dir": cfg.output_dir}
    if cfg.train.storage_path and command in ("run", "train", "tune"):
        places["train.storage_path"] = cfg.train.storage_path
    if cfg.data.output_uri and command in ("run", "ingest"):
        places["data.output_uri"] = cfg.data.output_uri
    return places


def preflight(cfg: PipelineConfig, command: str) -> None:
    from raylane.tracking import tracking_uri

    check_ray_address(os.environ.get("RAY_ADDRESS"))
    check_tracking_server(tracking_uri(cfg))
    if command != "serve":
        for key, uri in storage_locations(cfg, command).items():
            check_writable(key, uri)
