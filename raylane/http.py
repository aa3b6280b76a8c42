"""Waiting for an HTTP endpoint to come up (a Serve app, an MLflow server)."""

from __future__ import annotations

import time
from typing import Callable

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
