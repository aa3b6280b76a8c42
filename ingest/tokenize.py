"""Tokenization as a Ray Data callable class, so each actor loads the tokenizer once."""

from __future__ import annotations

import pyarrow as pa


class TokenizeBatch:
    def __init__(self, model_name_or_path: str, max_length: int, label_names: list[str]):
        from raylane.models import load_tokenizer

        self.tokenizer = load_tokenizer(model_name_or_path)
        self.max_length = max_length
        self.label_ids = {name: i for i, name in enumerate(label_names)}

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        # No padding here: the training collate pads each batch to its own longest row.
        input_ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return pa.table(
            {
                "text": pa.array(texts, pa.string()),
                "label": pa.array([self.label_ids[x] for x in batch.column("label").to_pylist()], pa.int32()),
                "input_ids": pa.array(input_ids, pa.list_(pa.int32())),
                "split": batch.column("split"),
            }
        )
