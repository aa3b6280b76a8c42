"""Slices of the test split declared in config (`evaluate.slices`): which rows belong to each.
Pure functions of the text, so the rule a user writes is the rule that is tested."""

from __future__ import annotations

import numpy as np

from raylane.config import SliceConfig


def in_slice(text: str, rule: SliceConfig) -> bool:
    words = len(text.split())
    return (
        (not rule.max_words or words <= rule.max_words)
        and (not rule.min_words or words >= rule.min_words)
        and (not rule.contains or rule.contains.casefold() in text.casefold())
    )


def column(name: str) -> str:
    return f"slice_{name}"


def membership(texts: list[str], rules: list[SliceConfig]) -> dict[str, np.ndarray]:
    """slice column -> boolean mask over `texts`: small enough to bring back to the driver,
    where the texts themselves would not be."""
    return {column(rule.name): np.array([in_slice(t, rule) for t in texts], dtype=bool) for rule in rules}


def flag_slices(batch, rules: list[SliceConfig]):
    """Ray Data batch function (pandas): a boolean column per slice."""
    for name, mask in membership([str(t) for t in batch["text"]], rules).items():
        batch[name] = mask
    return batch
