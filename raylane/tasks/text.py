"""Text inputs (the text_* tasks): one or more text columns joined into one text, cleaned (NFKC,
no control characters, single spaces), optionally lower-cased, PII-masked, checked for length;
tokenized with the model's fast tokenizer at ingest; padded per batch for training; prepared the
same way from raw text when served (the model's `preprocessing.json`)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raylane.hashing import stable_hash
from raylane.pii import mask_pii
from raylane.tasks.base import RequestProblem, ScoredInputs

MISSING_FIELD = "missing_field"
EMPTY_TEXT = "empty_text"
TOO_LONG = "too_long"


# A hard ceiling on every text a request carries, whatever the settings: the configured limits
# (serve.max_chars, serve.max_texts) are checked on the way in, with messages that name them.
TEXT_CEILING = 100_000


class StrictBody(BaseModel):
    """A request body: unknown fields are an error (422), not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TextsRequest(StrictBody):
    texts: list[Annotated[str, Field(max_length=TEXT_CEILING)]] = Field(
        min_length=1, max_length=10_000, description="Texts to score"
    )
    top_k: int = Field(1, ge=1, le=100, description="Labels returned per text, best first (classification)")


class TextInputs(ScoredInputs):
    kind = "text"
    modality = "text"
    column = "text"
    drift_feature = "input_tokens"
    config_keys = frozenset({"evaluate.slices", "serve.feedback", "data.feedback_source"})

    def example(self) -> dict[str, list]:
        return {"text": ["Fine-tuning transformers for text classification."]}

    def raw_preparer(self, model_dir: str):
        from raylane.text import TextPrep

        return TextPrep.of_model(model_dir)

    def request_model(self):
        return TextsRequest

    def upload_request(self, blobs: list[bytes]):
        from raylane.tasks.base import RequestProblem

        try:
            return TextsRequest(texts=[blob.decode("utf-8") for blob in blobs])
        except (UnicodeDecodeError, ValueError) as err:
            raise RequestProblem(422, f"uploaded files must be UTF-8 texts ({type(err).__name__})") from None

    def items(self, request, limits) -> list:
        texts = request.texts
        if len(texts) > limits.max_texts:
            raise RequestProblem(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}")
        too_long = [i for i, t in enumerate(texts) if len(t) > limits.max_chars]
        if too_long and limits.on_too_long == "reject":
            raise RequestProblem(422, f"texts {too_long[:10]} are longer than {limits.max_chars} characters")
        return [t[: limits.max_chars] for t in texts]

    def fields(self, data) -> list[str]:
        return list(data.text_fields)

    def prepare(
        self, columns: list, spec, errors: list[str], sources: list[str], blobs: list | None = None
    ) -> dict[str, Any]:
        """The input part of prepared rows: the text, its hash and length, an input problem (if
        any), PII counts. `columns`: the reader's Arrow columns of the text fields; rows with a
        parse error get an empty text."""
        from raylane.text import clean_column, may_hold_pii

        values = [column.to_pylist() for column in columns]
        cleaned = [clean_column(column, vals) for column, vals in zip(columns, values)]
        joined = cleaned[0] if len(cleaned) == 1 else [". ".join(p for p in parts if p) for parts in zip(*cleaned)]
        if spec.lowercase:
            joined = [t.lower() for t in joined]
        maybe_pii = may_hold_pii(joined) if spec.pii_kinds else [False] * len(joined)
        out: dict[str, Any] = {
            "text": [],
            "hash": [],
            "n_chars": [],
            "reason": [],
            "detail": [],
            "pii": {kind: [] for kind in spec.pii_kinds},
        }
        for error, raw, text, masked in zip(errors, zip(*values), joined, maybe_pii):
            counts: dict[str, int] = {}
            if error:
                text = ""
            elif text and spec.pii_kinds and masked:
                text, counts = mask_pii(text, spec.pii_kinds)
            reason, detail = self.check(raw, text, spec.max_chars)
            out["text"].append(text)
            out["hash"].append(stable_hash(text))
            out["n_chars"].append(len(text))
            out["reason"].append(reason)
            out["detail"].append(detail)
            for kind in spec.pii_kinds:
                out["pii"][kind].append(counts.get(kind, 0))
        return out

    @staticmethod
    def check(raw: tuple, text: str, max_chars: int) -> tuple[str, str]:
        """An input problem of one row, given its raw fields and its prepared text; ("", "") if none."""
        if all(v is None for v in raw):
            return MISSING_FIELD, "every text field is missing"
        if not text:
            return EMPTY_TEXT, "no text left after cleaning"
        if len(text) > max_chars:
            return TOO_LONG, f"{len(text)} characters > data.max_chars={max_chars}"
        return "", ""

    # --- the tokenized dataset ----------------------------------------------------------------
    def encoder(self, name_or_path: str, max_length: int):
        """(Ray Data task function, its kwargs, actor class, a digest of what it encodes with) to
        tokenize prepared rows; see `raylane.tokenize`."""
        from raylane.tokenize import TokenizeBatch, definition_digest, tokenize_batch, tokenizer_definition

        definition = tokenizer_definition(name_or_path)
        kwargs = {"definition": definition, "max_length": max_length}
        return tokenize_batch, kwargs, TokenizeBatch, definition_digest(definition)

    def shard_columns(self, batch) -> dict[str, Any]:
        return {"input_ids": batch.column("input_ids"), "length": batch.column("length")}

    columns = {"text": "string", "label": "the target's encoding", "input_ids": "list<int32>", "length": "int32"}

    def split_stats(self, scan, max_length: int) -> tuple[str, Any]:
        """The manifest's account of a split's inputs: its token lengths."""
        return "token_lengths", token_length_stats(scan, max_length)

    # --- model --------------------------------------------------------------------------------
    def load_model(self, name_or_path: str, labels: list[str], target, init: str = "pretrained"):
        from transformers import AutoModelForSequenceClassification

        from raylane.models import load_head_model

        head = {
            "num_labels": target.num_outputs(labels),
            "problem_type": target.problem_type(),
            "id2label": dict(enumerate(labels or ["value"])),
            "label2id": {name: i for i, name in enumerate(labels or ["value"])},
        }
        return load_head_model(AutoModelForSequenceClassification, name_or_path, init, **head)

    def load_processor(self, name_or_path: str):
        from raylane.models import load_tokenizer

        return load_tokenizer(name_or_path)

    def collate(self, processor, target, n_labels: int, extras: dict[str, Any], pack_width: int = 0):
        from raylane.tasks.collate import PadCollate

        return PadCollate(processor.pad_token_id or 0, target, n_labels, extras)

    # --- inference ----------------------------------------------------------------------------
    def encode(self, processor, items: list, device) -> tuple[dict[str, Any], np.ndarray]:
        """Raw (already prepared) texts -> model inputs, and each text's token count (for drift)."""
        enc = processor(items, padding=True, truncation=True, return_tensors="pt").to(device)
        return dict(enc), enc["attention_mask"].sum(dim=1).cpu().numpy()

    def sort_key(self, item) -> int:
        """Similar lengths side by side: a chunk pads to its longest text."""
        return len(item)


def token_length_stats(scan, max_length: int):
    """Token lengths of a split (`scan(columns)` yields its batches): percentiles from a histogram
    of max_length + 1 bins, so memory stays flat; binned for drift."""
    from raylane.drift import length_histogram
    from raylane.manifest import LengthStats

    hist = np.zeros(max_length + 1, np.int64)
    for batch in scan(["length"]):
        hist += np.bincount(batch.column("length").to_numpy(), minlength=max_length + 1)[: max_length + 1]
    total = int(hist.sum())
    if not total:
        return LengthStats(p50=0, p95=0, max=0, mean=0.0, truncated=0, histogram=length_histogram(hist))
    cumulative = np.cumsum(hist)
    return LengthStats(
        p50=int(np.searchsorted(cumulative, 0.50 * total)),
        p95=int(np.searchsorted(cumulative, 0.95 * total)),
        max=int(np.flatnonzero(hist)[-1]),
        mean=round(float((hist * np.arange(len(hist))).sum() / total), 2),
        truncated=int(hist[max_length]),
        histogram=length_histogram(hist),
    )
