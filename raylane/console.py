"""Lines for the person watching the console."""

from __future__ import annotations

import sys


def say(line: str) -> None:
    """Write one line and flush it (a job's log shows it at once).

    Not `print`: inside a Ray Train worker, Train v2 swaps `print` for one that logs the line and
    also prints it, so every epoch line reached the console twice.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
