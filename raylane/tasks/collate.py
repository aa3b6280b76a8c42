"""Batches for training: Ray Data collate functions that turn a batch of shard rows into model
inputs and the labels the target's loss wants. Here, not beside their inputs, because they
subclass Ray Data's collate base class, and importing Ray Data costs seconds that the CLI's
config checks should not pay."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.data.collate_fn import NumpyBatchCollateFn

from raylane.images import decode_all
from raylane.tasks.base import IGNORE


class PadCollate(NumpyBatchCollateFn):
    """Ray Data collate function: pad each batch to its own longest row (dynamic padding: on short
    texts a fraction of the work of padding everything to max_length), labels as the target wants."""

    def __init__(self, pad_id: int, target, n_labels: int, extras: dict[str, Any]):
        self.pad_id, self.target, self.n_labels, self.extras = pad_id, target, n_labels, extras

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        rows = batch["input_ids"]
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": self.target.label_tensor(batch["label"], self.n_labels, self.extras),
            **soft_targets(batch),
        }


def soft_targets(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """A teacher's soft targets, where the rows carry them (`train.distill`)."""
    import torch

    if "teacher" not in batch:
        return {}
    return {"teacher": torch.from_numpy(np.stack(batch["teacher"]).astype(np.float32))}


class ImageCollate(NumpyBatchCollateFn):
    """Ray Data collate function: decode, resize and normalise a batch with the model's processor."""

    def __init__(self, processor, target, n_labels: int, extras: dict[str, Any]):
        self.processor, self.target, self.n_labels, self.extras = processor, target, n_labels, extras

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        images, _ = decode_all(list(batch["image"]))
        return {
            "pixel_values": self.processor(images, return_tensors="pt")["pixel_values"],
            "labels": self.target.label_tensor(batch["label"], self.n_labels, self.extras),
            **soft_targets(batch),
        }


class AnswerCollate(NumpyBatchCollateFn):
    """Ray Data collate function for conversations (causal_lm): right-padded token ids, and labels
    that are the ids themselves on the answer's tokens and -100 (no loss) on the prompt's and the
    padding's. The model shifts nothing; the target's loss compares position t with t + 1.

    `trim`: the model computes logits (`logits_to_keep`) only from the position before the
    batch's earliest answer token on, and the labels start there too. Answers are short beside
    their prompts in instruction data, and the vocabulary projection of every prompt position
    (49k logits each for SmolLM2) is work and memory the loss never reads."""

    def __init__(self, pad_id: int, trim: bool = True):
        self.pad_id, self.trim = pad_id, trim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        rows = batch["input_ids"]
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
        prompt_lengths = batch["prompt_length"]
        for i, (row, start) in enumerate(zip(rows, prompt_lengths)):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
            labels[i, start : len(row)] = row[start:]
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        if not self.trim:
            return {**batch, "labels": torch.from_numpy(labels)}
        start = max(0, min(int(p) for p in prompt_lengths) - 1)
        return {
            **batch,
            "logits_to_keep": torch.arange(start, width),
            "labels": torch.from_numpy(labels[:, start:]),
        }
