"""Following a registry alias: a replica serving `models:/<name>@<alias>` polls where the alias
points and, when it moves, loads the new version beside the old one and swaps it in, so requests
keep succeeding throughout (each request uses whichever model was current when it started).

A version that fails to load (or to answer its canary) is not tried again every poll: the follower
remembers it until the alias moves again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raylane.generate import Generator
    from raylane.predictor import Predictor

logger = logging.getLogger("ray.serve")


class LoadFailed(RuntimeError):
    """A downloaded version that would not load or answer: trying again will not change that (a
    download that failed, on the other hand, is tried again at the next poll)."""


@dataclass(frozen=True)
class Loaded:
    """A model being served and where it came from."""

    model: Predictor | Generator
    name: str | None
    version: str | None
    loaded_at: float
    drift: object = None  # raylane.drift.DriftWindow over this model's predictions, if it has a reference


def alias_of(model_uri: str) -> tuple[str, str] | None:
    """(name, alias) of a `models:/<name>@<alias>` URI; None for anything pinned."""
    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return None
    name, _, alias = model_uri[len("models:/") :].partition("@")
    return name, alias


class AliasFollower:
    """Calls `on_change(version)` whenever the alias points at a version other than the current one."""

    def __init__(
        self,
        tracking_uri: str,
        name: str,
        alias: str,
        current: str | None,
        interval_s: float,
        on_change: Callable[[str], None],
    ):
        self.tracking_uri, self.name, self.alias = tracking_uri, name, alias
        self.current, self.interval_s, self.on_change = current, interval_s, on_change
        self.pointed: str | None = current  # where the alias pointed at the last look
        self.refused: str | None = None  # a version that failed to load, while the alias stays on it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{name}@{alias}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        """One look at the alias; `on_change` if it points somewhere new that has not failed."""
        from raylane.registry import alias_version

        try:
            version = alias_version(self.tracking_uri, self.name, self.alias)
            if version != self.pointed:  # the alias moved: a version that failed may be tried again
                self.pointed, self.refused = version, None
            if not version or version in (self.current, self.refused):
                return
            started = time.time()
            self.on_change(version)
            logger.info(
                "now serving %s version %s (was %s; loaded in %.1fs)",
                self.name,
                version,
                self.current,
                time.time() - started,
            )
            self.current = version
        except LoadFailed:
            self.refused = version
            logger.exception(
                "%s version %s failed to load; still serving version %s, and not trying %s again until %s@%s moves",
                self.name,
                version,
                self.current,
                version,
                self.name,
                self.alias,
            )
        except Exception:  # a registry hiccup must not stop the replica serving what it has
            logger.exception("following %s@%s failed; still serving version %s", self.name, self.alias, self.current)

    def stop(self) -> None:
        self._stop.set()


def follow(
    model_uri: str, tracking_uri: str, current: str | None, interval_s: float, swap_to: Callable[[str], None]
) -> AliasFollower | None:
    """For a `models:/<name>@<alias>` URI (and polling on): a follower that calls
    `swap_to("models:/<name>/<version>")` each time the alias moves; None for anything pinned."""
    followed = alias_of(model_uri)
    if not followed or interval_s <= 0:
        return None
    name, alias = followed
    return AliasFollower(
        tracking_uri, name, alias, current, interval_s, on_change=lambda version: swap_to(f"models:/{name}/{version}")
    )
