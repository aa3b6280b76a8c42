"""Waiting for an HTTP endpoint to come up (a Serve app, an MLflow server), and picking free
ports for the ones tests and benchmarks start."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

import requests


def wait_until_ok(url: str, timeout_s: float = 120, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll `url` until it answers 200; give up after `timeout_s` or once `alive()` is false."""
    deadline = time.time() + timeout_s
    while True:
        try:
            if requests.get(url, timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet
        if not alive():
            raise RuntimeError(f"{url}: the process behind it exited before answering")
        if time.time() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f}s")
        time.sleep(0.5)


def free_ports(n: int) -> list[int]:
    """n distinct free ports clear of Ray, whose processes take random ephemeral ports while they
    start (workers 10002+, the dashboard 8265 and up): one once took the port a test had picked
    for Serve."""
    ports = []
    for port in random.sample(range(8400, 9990), 400):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"not {n} free ports in 8400-9989")


def free_port() -> int:
    return free_ports(1)[0]
