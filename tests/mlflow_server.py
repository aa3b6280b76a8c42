"""A real `mlflow server` process on loopback, for the fixtures: SQLite store, proxied artifacts,
and, where asked, MLflow's basic-auth app as cluster.yaml runs it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from raylane.http import free_port, wait_until_ok


def basic_auth_env(root: Path, username: str, password: str) -> dict[str, str]:
    """The server environment for `--app-name basic-auth`: the ini cluster.yaml writes (admin
    created from the password on first start) and the Flask secret key the app requires."""
    ini = root / "auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {username}\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}


@contextlib.contextmanager
def running_mlflow_server(root: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    server_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        server_env.pop(name, None)
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            *args,
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=server_env,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{uri}/health", timeout_s=90, alive=lambda: proc.poll() is None)
    except (RuntimeError, TimeoutError) as e:
        proc.kill()
        logged = (root / "server.log").read_text()[-3000:]
        raise RuntimeError(f"mlflow server did not start ({e}):\n{logged}") from None
    try:
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
