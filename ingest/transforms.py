"""Pure row transforms: reader rows in, prepared rows out (pass one); verdicts applied (pass
three). No Ray here: each function is tested on its own; Ray Data maps `prepare_batch` and
`finalize_batch` over blocks. What differs between tasks (how a text or an image is prepared, how
a label is read) is the task's (`raylane.tasks`); the order of the checks is the same for all.

A row ends accepted (reason "") or quarantined with exactly one reason, the first that applies
in this order, so the counts per reason always add up to the rows read: a parse error; the label
(missing, malformed, empty, not a number); the inputs (missing, empty, too long, not an image);
a label outside `data.labels`; then, in pass two, duplicates, conflicting labels, and labels the
training data never shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from raylane.hashing import fraction_of, stable_fraction
from raylane.ingest.reader import MALFORMED, UNDECODABLE, field_columns
from raylane.tasks import get_task
from raylane.tasks.text import EMPTY_TEXT, MISSING_FIELD, TOO_LONG
from raylane.text import clean_text

ACCEPTED = ""
UNKNOWN_LABEL = "unknown_label"
DUPLICATE = "duplicate"
CONFLICTING_LABEL = "conflicting_label"
REASONS = (MALFORMED, UNDECODABLE, MISSING_FIELD, EMPTY_TEXT, TOO_LONG, UNKNOWN_LABEL, CONFLICTING_LABEL, DUPLICATE)


def normalize(text: Any, lowercase: bool = False) -> str:
    """Clean one value the way ingest and prediction both see text (NFKC, no control characters,
    single spaces), optionally lower-cased."""
    text = clean_text(text)
    return text.lower() if lowercase else text


@dataclass(frozen=True)
class RowSpec:
    """What `prepare_batch` needs from the config, small enough to ship to every task."""

    n_input_fields: int
    task: str = "text_classification"
    has_id: bool = False
    lowercase: bool = False
    max_chars: int = 20_000
    pii_kinds: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # empty: the label set is whatever the data shows
    label_separator: str = ""
    max_image_pixels: int = 50_000_000
    prompt_template: str = ""  # causal_lm: how prompt fields make the user message
    field_names: tuple[str, ...] = ()  # the input fields' names, which the template refers to
    label_field: str = ""  # its name: a chat row's answer is its messages' last turn when it names that field

    @property
    def fields(self) -> list[str]:
        """The reader's columns for the inputs, the label and the (optional) id, in that order."""
        return field_columns(self.n_input_fields + 1 + int(self.has_id))


def parse_problem(error: str) -> tuple[str, str]:
    """A reader error ("malformed_row: 3 fields, ...") as (reason, detail)."""
    reason, _, detail = error.partition(": ")
    return reason, detail or ("the record could not be parsed" if reason == MALFORMED else "bytes that do not decode")


def prepare_batch(batch: pa.Table, *, spec: RowSpec) -> pa.Table:
    """Reader rows (see `ingest.reader.schema`) -> prepared rows, one to one: the task's inputs
    prepared (text, content hash, payload), its label made canonical, one verdict per row, and
    the split key."""
    task = get_task(spec.task)
    n = spec.n_input_fields
    errors = batch.column("error").to_pylist()
    sources = batch.column("source").to_pylist()
    blobs = batch.column("blob").to_pylist() if "blob" in batch.column_names else None
    inputs = task.inputs.prepare([batch.column(name) for name in spec.fields[:n]], spec, errors, sources, blobs)
    raw_labels = batch.column(spec.fields[n]).to_pylist()
    keys = batch.column(spec.fields[n + 1]).to_pylist() if spec.has_id else [None] * batch.num_rows
    labels, reasons, details, fractions = [], [], [], []
    for i, error in enumerate(errors):
        check = task.target.check_label(raw_labels[i], spec.label_separator) if not error else None
        if error:
            reason, detail = parse_problem(error)
        elif check.reason:
            reason, detail = check.reason, check.detail
        elif inputs["reason"][i]:
            reason, detail = inputs["reason"][i], inputs["detail"][i]
        elif spec.labels and not task.target.known(check.value, frozenset(spec.labels)):
            reason, detail = UNKNOWN_LABEL, f"label '{check.value}' is not in data.labels"
        else:
            reason, detail = ACCEPTED, ""
        value = check.value if check else ""
        if reason == ACCEPTED:
            value, found = task.target.mask_label(value, spec.pii_kinds)
            for kind, n in found.items():
                inputs["pii"][kind][i] += n
        labels.append(value)
        reasons.append(reason)
        details.append(detail)
        key = normalize(keys[i]) if keys[i] is not None else ""
        # The split key is the id when there is one, else the content (whose hash is at hand).
        fractions.append(stable_fraction(key) if key else fraction_of(inputs["hash"][i]))
    texts = [t if r in (ACCEPTED, UNKNOWN_LABEL) else t[:1000] for t, r in zip(inputs["text"], reasons)]
    out = {name: batch.column(name) for name in ("source", "line", "lines", "pos", "role", "raw")}
    out.update(
        {
            "text": pa.array(texts, pa.string()),
            "label": pa.array(labels, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "detail": pa.array(details, pa.string()),
            "text_hash": pa.array(inputs["hash"], pa.int64()),
            "key_frac": pa.array(fractions, pa.float64()),
            "n_chars": pa.array(inputs["n_chars"], pa.int32()),
        }
    )
    for kind in spec.pii_kinds:
        out[f"pii_{kind}"] = pa.array(inputs["pii"].get(kind, [0] * batch.num_rows), pa.int32())
    for name, values in inputs.items():
        if name not in ("text", "hash", "n_chars", "reason", "detail", "pii"):
            out[name] = pa.array(values)  # the inputs' payload (an image and its statistics)
    return pa.table(out)


# --- the second pass: verdicts that need the whole dataset ------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the first pass over all rows decided, applied row by row in the second.

    `drop_pos`/`drop_reason` (sorted by position) are the duplicates and conflicting labels;
    `val_cut`/`test_cut` map a label to the key-fraction thresholds of its split (one entry "*"
    when the split is not stratified)."""

    labels: tuple[str, ...]
    task: str = "text_classification"
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

    def known(self, label: str) -> bool:
        """Whether every label name in `label` is in the label set (always, for a number)."""
        return get_task(self.task).target.known(label, frozenset(self.labels))

    def split(self, label: str, key_frac: float, role: str) -> str:
        if role == "test":
            return "test"
        test_cut = self.test_cut.get(label, self.test_cut.get("*", 0.0))
        val_cut = self.val_cut.get(label, self.val_cut.get("*", 0.0))
        if role == "feedback":  # never test: the test split must stay comparable across retrainings
            return "val" if key_frac < val_cut - test_cut else "train"
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
    splits = []
    for i, (label, frac, role) in enumerate(
        zip(labels, batch.column("key_frac").to_pylist(), batch.column("role").to_pylist())
    ):
        if reasons[i] == ACCEPTED and dropped[i]:
            reasons[i], details[i] = dropped[i], _DROP_DETAIL[dropped[i]]
        elif reasons[i] == ACCEPTED and not plan.known(label):
            reasons[i], details[i] = UNKNOWN_LABEL, f"label '{label}' never occurs in the training data"
        splits.append(plan.split(label, frac, role))
    return (
        batch.set_column(batch.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.string()))
        .set_column(batch.schema.get_field_index("detail"), "detail", pa.array(details, pa.string()))
        .append_column("split", pa.array(splits, pa.string()))
    )


def output_rows(batch: pa.Table, *, labels: list[str], task: str = "text_classification") -> pa.Table:
    """Accepted, finalized rows -> the columns of a split shard: the text, the label as the task's
    target encodes it (an index into `labels`, a list of them, a number), the inputs' columns."""
    spec = get_task(task)
    return pa.table(
        {
            "text": batch.column("text"),
            "label": spec.target.encode(batch.column("label"), labels),
            **spec.inputs.shard_columns(batch),
            "split": batch.column("split"),
        }
    )
