"""Pure row transforms: raw fields in, a cleaned, masked, validated row out. No Ray here: each
function is tested on its own; Ray Data maps `prepare_batch` and `finalize_batch` over blocks.

A row ends accepted (reason "") or quarantined with exactly one reason, the first that applies
in the order below, so the counts per reason always add up to the rows read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylane.ingest.reader import MALFORMED, UNDECODABLE, field_columns
from raylane.pii import mask_pii
from raylane.text import clean_text, join_text

ACCEPTED = ""
MISSING_FIELD = "missing_field"
EMPTY_TEXT = "empty_text"
TOO_LONG = "too_long"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE = "duplicate"
CONFLICTING_LABEL = "conflicting_label"
REASONS = (MALFORMED, UNDECODABLE, MISSING_FIELD, EMPTY_TEXT, TOO_LONG, UNKNOWN_LABEL, CONFLICTING_LABEL, DUPLICATE)

_HASH_SPAN = float(2**64)


def normalize(text: Any, lowercase: bool = False) -> str:
    """Clean one value the way ingest and prediction both see text (NFKC, no control characters,
    single spaces), optionally lower-cased."""
    text = clean_text(text)
    return text.lower() if lowercase else text


def stable_hash(key: str) -> int:
    """A signed 64-bit hash fixed by `key` alone (not by Python's per-process hash seed)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key`: the same row lands in the same split whatever the shard
    order, the worker or the size of the rest of the data."""
    return (stable_hash(key) + 2**63) / _HASH_SPAN


@dataclass(frozen=True)
class RowSpec:
    """What `prepare_batch` needs from the config, small enough to ship to every task."""

    n_text_fields: int
    has_id: bool = False
    lowercase: bool = False
    max_chars: int = 20_000
    pii_kinds: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # empty: the label set is whatever the data shows

    @property
    def fields(self) -> list[str]:
        """The reader's columns for text fields, label and (optional) id, in that order."""
        return field_columns(self.n_text_fields + 1 + int(self.has_id))


def validate(error: str, texts: list[Any], label: str | None, text: str, spec: RowSpec) -> tuple[str, str]:
    """(reason, detail) for one row, given its raw text fields and its cleaned label and text;
    ("", "") when it is accepted so far."""
    if error:
        reason, _, detail = error.partition(": ")
        return reason, detail or (
            "the record could not be parsed" if reason == MALFORMED else "bytes that do not decode"
        )
    if not label:
        return MISSING_FIELD, "label is missing or empty"
    if all(t is None for t in texts):
        return MISSING_FIELD, "every text field is missing"
    if not text:
        return EMPTY_TEXT, "no text left after cleaning"
    if len(text) > spec.max_chars:
        return TOO_LONG, f"{len(text)} characters > data.max_chars={spec.max_chars}"
    if spec.labels and label not in spec.labels:
        return UNKNOWN_LABEL, f"label '{label}' is not in data.labels"
    return ACCEPTED, ""


def prepare_row(error: str, texts: list[Any], label: Any, key: Any, spec: RowSpec) -> dict[str, Any]:
    """One raw row -> text (cleaned, PII masked), label, verdict and the keys the plan needs."""
    return _prepared(error, texts, "" if error else join_text(texts, spec.lowercase), label, key, spec)


def _prepared(
    error: str, texts: list[Any], text: str, label: Any, key: Any, spec: RowSpec, maybe_pii: bool = True
) -> dict[str, Any]:
    """`prepare_row` once the text fields are cleaned and joined into `text`; `maybe_pii` False
    skips masking a text known to hold no candidate for it."""
    pii: dict[str, int] = {}
    if text and spec.pii_kinds and maybe_pii:
        text, pii = mask_pii(text, spec.pii_kinds)
    label = normalize(label) if label is not None else ""
    reason, detail = validate(error, texts, label, text, spec)
    text_hash = stable_hash(text)
    key = normalize(key) if key is not None else ""
    return {
        "text": text if reason in (ACCEPTED, UNKNOWN_LABEL) else text[:1000],
        "label": label,
        "reason": reason,
        "detail": detail,
        "text_hash": text_hash,
        # The split key is the id when there is one, else the text (whose hash is at hand).
        "key_frac": stable_fraction(key) if key else (text_hash + 2**63) / _HASH_SPAN,
        "n_chars": len(text),
        "pii": pii,
    }


# In ASCII text, clean_text turns every run of control characters and whitespace into one space.
_ASCII_SPACE_RUN = r"[\x00-\x20\x7f]+"
# A superset of what raylane.pii looks for before masking: every PII kind needs one of these
# in ASCII text (a digit, "@", "://", "www."); non-ASCII text is always handed over.
_ASCII_PII_HINT = r"[0-9@]|://|www\.|WWW\."


def clean_column(values: pa.ChunkedArray | pa.Array, as_python: list[Any]) -> list[str]:
    """`clean_text` of every value (null -> ""): Arrow kernels for ASCII values, which need no
    NFKC, and Python for the rest (`as_python`: the same values, already converted). Equal to
    `clean_text` value by value (tested)."""
    fast = pc.utf8_trim(pc.replace_substring_regex(values, _ASCII_SPACE_RUN, " "), " ").to_pylist()
    is_ascii = pc.string_is_ascii(values).to_pylist()
    return [f if a else clean_text(v) for f, a, v in zip(fast, is_ascii, as_python)]


def may_hold_pii(texts: list[str]) -> list[bool]:
    """False where `mask_pii` would find nothing to mask, judged in one Arrow pass."""
    values = pa.array(texts, pa.string())
    hint = pc.or_(pc.invert(pc.string_is_ascii(values)), pc.match_substring_regex(values, _ASCII_PII_HINT))
    return hint.to_pylist()


def prepare_batch(batch: pa.Table, *, spec: RowSpec) -> pa.Table:
    """Reader rows (see `ingest.reader.schema`) -> prepared rows, one to one; the same rows as
    `prepare_row` gives (tested), with cleaning and the PII pre-check done per column."""
    n = spec.n_text_fields
    columns = [batch.column(name).to_pylist() for name in spec.fields]
    texts_by_row = list(zip(*columns[:n]))
    cleaned = [clean_column(batch.column(name), values) for name, values in zip(spec.fields[:n], columns)]
    joined = cleaned[0] if n == 1 else [". ".join(p for p in parts if p) for parts in zip(*cleaned)]
    if spec.lowercase:
        joined = [t.lower() for t in joined]
    maybe_pii = may_hold_pii(joined) if spec.pii_kinds else [False] * batch.num_rows
    labels = columns[n]
    keys = columns[n + 1] if spec.has_id else [None] * batch.num_rows
    rows = [
        _prepared(e, list(t), "" if e else j, lab, k, spec, m)
        for e, t, j, lab, k, m in zip(batch.column("error").to_pylist(), texts_by_row, joined, labels, keys, maybe_pii)
    ]
    out = {name: batch.column(name) for name in ("source", "line", "lines", "pos", "role", "raw")}
    for name, tp in (
        ("text", pa.string()),
        ("label", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("text_hash", pa.int64()),
        ("key_frac", pa.float64()),
        ("n_chars", pa.int32()),
    ):
        out[name] = pa.array([r[name] for r in rows], tp)
    for kind in spec.pii_kinds:
        out[f"pii_{kind}"] = pa.array([r["pii"].get(kind, 0) for r in rows], pa.int32())
    return pa.table(out)


# --- the second pass: verdicts that need the whole dataset ------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the first pass over all rows decided, applied row by row in the second.

    `drop_pos`/`drop_reason` (sorted by position) are the duplicates and conflicting labels;
    `val_cut`/`test_cut` map a label to the key-fraction thresholds of its split (one entry "*"
    when the split is not stratified)."""

    labels: tuple[str, ...]
    drop_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    drop_reason: tuple[str, ...] = ()
    test_cut: dict[str, float] = field(default_factory=dict)
    val_cut: dict[str, float] = field(default_factory=dict)

    def dropped(self, pos: np.ndarray) -> list[str]:
        """The dedup verdict per position: "" or DUPLICATE / CONFLICTING_LABEL."""
        if not len(self.drop_pos):
            return [""] * len(pos)
        idx = np.searchsorted(self.drop_pos, pos)
        idx_ok = np.minimum(idx, len(self.drop_pos) - 1)
        hit = self.drop_pos[idx_ok] == pos
        return [self.drop_reason[i] if h else "" for i, h in zip(idx_ok.tolist(), hit.tolist())]

    def split(self, label: str, key_frac: float, role: str) -> str:
        if role == "test":
            return "test"
        test_cut = self.test_cut.get(label, self.test_cut.get("*", 0.0))
        val_cut = self.val_cut.get(label, self.val_cut.get("*", 0.0))
        if key_frac < test_cut:
            return "test"
        return "val" if key_frac < val_cut else "train"


_DROP_DETAIL = {DUPLICATE: "same text as an earlier row", CONFLICTING_LABEL: "same text appears with another label"}


def finalize_batch(batch: pa.Table, *, plan: Plan) -> pa.Table:
    """Prepared rows -> final reason and split. Adds `split`; reasons set in pass one stay."""
    reasons = batch.column("reason").to_pylist()
    details = batch.column("detail").to_pylist()
    labels = batch.column("label").to_pylist()
    dropped = plan.dropped(batch.column("pos").to_numpy())
    known = set(plan.labels)
    splits = []
    for i, (label, frac, role) in enumerate(
        zip(labels, batch.column("key_frac").to_pylist(), batch.column("role").to_pylist())
    ):
        if reasons[i] == ACCEPTED and dropped[i]:
            reasons[i], details[i] = dropped[i], _DROP_DETAIL[dropped[i]]
        elif reasons[i] == ACCEPTED and label not in known:
            reasons[i], details[i] = UNKNOWN_LABEL, f"label '{label}' never occurs in the training data"
        splits.append(plan.split(label, frac, role))
    return (
        batch.set_column(batch.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.string()))
        .set_column(batch.schema.get_field_index("detail"), "detail", pa.array(details, pa.string()))
        .append_column("split", pa.array(splits, pa.string()))
    )


def output_rows(batch: pa.Table, *, labels: list[str]) -> pa.Table:
    """Accepted, finalized rows -> the columns of a split shard, the label as its index in `labels`."""
    return pa.table(
        {
            "text": batch.column("text"),
            "label": pc.index_in(batch.column("label"), value_set=pa.array(labels, pa.string())).cast(pa.int32()),
            "input_ids": batch.column("input_ids"),
            "length": batch.column("length"),
            "split": batch.column("split"),
        }
    )
