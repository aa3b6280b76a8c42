"""Text normalisation shared by ingest (training data) and prediction (data to score), so a
text is cleaned the same way on both sides."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")


def is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA: what CSV/JSON readers give for an absent field."""
    return value is None or (isinstance(value, float) and value != value) or type(value).__name__ == "NAType"


def clean_text(value: Any) -> str:
    """NFKC-normalise, drop control characters, collapse runs of whitespace."""
    if is_missing(value):
        return ""
    text = str(value)
    if not text.isascii():  # NFKC leaves ASCII as it is; most rows skip the call
        text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


def join_text(parts: list[Any], lowercase: bool = False) -> str:
    """The cleaned, non-empty parts joined with '. ' (title + description -> one text),
    optionally lower-cased."""
    text = ". ".join(part for part in map(clean_text, parts) if part)
    return text.lower() if lowercase else text
