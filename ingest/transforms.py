"""Pure row transforms. No Ray here: each function is tested on its own, and Ray Data only maps
`prepare_batch` over blocks."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from raylane.text import clean_text, is_missing, join_text

# Quarantine reasons; "" means the row was accepted.
ACCEPTED = ""
MISSING_LABEL = "missing_label"
EMPTY_TEXT = "empty_text"
UNKNOWN_LABEL = "unknown_label"


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` alone: the same row lands in the same split whatever
    the shard order, the worker or the Python hash seed."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:13], 16) / 16**13


def assign_split(key: str, val_fraction: float, test_fraction: float = 0.0) -> str:
    x = stable_fraction(key)
    if x < test_fraction:
        return "test"
    if x < test_fraction + val_fraction:
        return "val"
    return "train"


def quarantine_reason(text: str, label: Any) -> str:
    if is_missing(label) or clean_text(label) == "":
        return MISSING_LABEL
    if not text:
        return EMPTY_TEXT
    return ACCEPTED


def prepare_batch(
    batch: pd.DataFrame,
    *,
    text_fields: list[str],
    label_field: str,
    val_fraction: float,
    test_fraction: float,
    split: str | None = None,
) -> pd.DataFrame:
    """Raw rows -> text, label, split and quarantine reason, keeping the original row as JSON
    so a quarantined row can be inspected and replayed exactly as it came in."""
    records = batch.to_dict(orient="records")
    texts = [join_text([row.get(f) for f in text_fields]) for row in records]
    labels = [None if is_missing(row.get(label_field)) else clean_text(row.get(label_field)) for row in records]
    if split is None:
        splits = [assign_split(t, val_fraction, test_fraction) for t in texts]
    else:
        splits = [split] * len(records)
    return pd.DataFrame(
        {
            "text": texts,
            "label": [label or "" for label in labels],
            "split": splits,
            "reason": [quarantine_reason(t, label) for t, label in zip(texts, labels)],
            "raw": [json.dumps(row, default=str, ensure_ascii=False) for row in records],
        }
    )


def mark_unknown_labels(batch: pd.DataFrame, *, label_names: list[str]) -> pd.DataFrame:
    """Quarantine accepted rows whose label the training data never showed (e.g. in a test file)."""
    known = set(label_names)
    unknown = (batch["reason"] == ACCEPTED) & ~batch["label"].isin(known)
    batch = batch.copy()
    batch.loc[unknown, "reason"] = UNKNOWN_LABEL
    return batch
