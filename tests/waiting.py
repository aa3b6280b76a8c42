"""Waiting on real processes: a condition polled until it holds, a process stopped as Ctrl-C would."""

import signal
import subprocess
import time


def wait_until(condition, what: str, timeout_s: float = 90, every_s: float = 0.2):
    """The condition's first truthy value; fails naming `what` after `timeout_s`."""
    deadline = time.time() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.time() < deadline, what
        time.sleep(every_s)


def interrupt(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGINT (what Ctrl-C sends), then SIGKILL if it has not exited in `timeout_s`."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
