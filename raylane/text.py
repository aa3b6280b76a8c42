"""Text normalisation shared by ingest (training data) and prediction (data to score), so a
text is cleaned the same way on both sides."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
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


# In ASCII text, clean_text turns every run of control characters and whitespace into one space.
_ASCII_SPACE_RUN = r"[\x00-\x20\x7f]+"
# A superset of what raylane.pii looks for before masking: every PII kind needs one of these
# in ASCII text (a digit, "@", "://", "www."); non-ASCII text is always handed over.
_ASCII_PII_HINT = r"[0-9@]|://|www\.|WWW\."


def clean_column(values, as_python: list[Any]) -> list[str]:
    """`clean_text` of every value (null -> ""): Arrow kernels for ASCII values, which need no
    NFKC, and Python for the rest (`as_python`: the same values, already converted). Equal to
    `clean_text` value by value (tested)."""
    import pyarrow.compute as pc

    fast = pc.utf8_trim(pc.replace_substring_regex(values, _ASCII_SPACE_RUN, " "), " ").to_pylist()
    is_ascii = pc.string_is_ascii(values).to_pylist()
    return [f if a else clean_text(v) for f, a, v in zip(fast, is_ascii, as_python)]


def may_hold_pii(texts: list[str]) -> list[bool]:
    """False where `mask_pii` would find nothing to mask, judged in one Arrow pass."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(texts, pa.string())
    hint = pc.or_(pc.invert(pc.string_is_ascii(values)), pc.match_substring_regex(values, _ASCII_PII_HINT))
    return hint.to_pylist()


PREP_FILE = "preprocessing.json"


@dataclass(frozen=True)
class TextPrep:
    """What ingest did to a text before the model saw it in training (lower-casing, PII masking),
    stored with the model so that serving and batch prediction do the same to raw text."""

    lowercase: bool = False
    mask_pii: tuple[str, ...] = ()

    def __call__(self, text: Any) -> str:
        from raylane.pii import mask_pii

        text = clean_text(text)
        if self.lowercase:
            text = text.lower()
        return mask_pii(text, self.mask_pii)[0] if self.mask_pii and text else text

    def save(self, model_dir: str | Path) -> None:
        (Path(model_dir) / PREP_FILE).write_text(
            json.dumps({"lowercase": self.lowercase, "mask_pii": list(self.mask_pii)})
        )

    @classmethod
    def of_model(cls, model_dir: str | Path) -> TextPrep:
        """The model's preparation; cleaning only for a model exported without one."""
        path = Path(model_dir) / PREP_FILE
        if not path.exists():
            return cls()
        saved = json.loads(path.read_text())
        return cls(bool(saved.get("lowercase")), tuple(saved.get("mask_pii", ())))
