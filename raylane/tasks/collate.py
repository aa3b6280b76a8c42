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
    """Ray Data collate function for conversations (causal_lm). The labels are next-token targets
    aligned with the logits the model returns: `labels[b, j]` is the token that logit row j of row
    b must predict where that token is part of the answer, else -100 (no loss on the prompt, the
    padding, or across a conversation's end).

    The model computes logits (`logits_to_keep`) only at the positions some row needs: those
    before an answer token. Answers are short beside their prompts in instruction data, and the
    vocabulary projection of every prompt position (49k logits each for SmolLM2) is work and
    memory the loss never reads. `trim=False` keeps every position.

    `pack_width` > 0 packs the batch's conversations into rows of at most that many tokens
    (`tightest_packs`), instead of one padded row each. Each conversation's position
    ids start again at 0 and no attention mask is given: transformers then reads the packing from
    the position ids and keeps attention inside each conversation (a block-diagonal mask on
    SDPA and eager, the varlen kernel on flash-attention). The batch holds the same conversations
    and answer tokens, so the loss is the same; `rows` says how many conversations it holds."""

    def __init__(self, pad_id: int, trim: bool = True, pack_width: int = 0):
        self.pad_id, self.trim, self.pack_width = pad_id, trim, pack_width

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        rows, prompt_lengths = batch["input_ids"], batch["prompt_length"]
        lengths = [len(r) for r in rows]
        packs = tightest_packs(lengths, self.pack_width) if self.pack_width else [[i] for i in range(len(rows))]
        width = max(sum(lengths[i] for i in pack) for pack in packs)
        input_ids = np.full((len(packs), width), self.pad_id, dtype=np.int64)
        positions = np.zeros((len(packs), width), dtype=np.int64)
        attention_mask = np.zeros((len(packs), width), dtype=np.int64)
        labels = np.full((len(packs), width), IGNORE, dtype=np.int64)
        for p, pack in enumerate(packs):
            at = 0
            for i in pack:
                row, n, start = rows[i], lengths[i], max(1, int(prompt_lengths[i]))
                input_ids[p, at : at + n] = row
                positions[p, at : at + n] = np.arange(n)
                attention_mask[p, at : at + n] = 1
                # Logit at position t predicts token t + 1: the answer's tokens, from the one
                # before the answer's first to the one before the conversation's last.
                labels[p, at + start - 1 : at + n - 1] = row[start:]
                at += n
            positions[p, at:] = np.arange(width - at)  # the padding: a sequence of its own
        inputs = {"input_ids": torch.from_numpy(input_ids)}
        if self.pack_width:
            inputs.update(position_ids=torch.from_numpy(positions), rows=torch.tensor(len(rows)))
        else:
            inputs["attention_mask"] = torch.from_numpy(attention_mask)
        if not self.trim:
            return {**inputs, "labels": torch.from_numpy(labels)}
        keep = np.flatnonzero((labels != IGNORE).any(axis=0))
        return {**inputs, "logits_to_keep": torch.from_numpy(keep), "labels": torch.from_numpy(labels[:, keep])}


class PairCollate(NumpyBatchCollateFn):
    """Ray Data collate function for preference pairs: a batch of B pairs becomes 2B answer rows,
    the chosen answers first and the rejected ones after, labelled as `AnswerCollate` labels them
    (the answers' tokens alone, logits kept only where an answer needs them); `rows` says B."""

    def __init__(self, pad_id: int):
        self.answers = AnswerCollate(pad_id)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        prompt_lengths = np.asarray(batch["prompt_length"])
        both = {
            "input_ids": [*batch["input_ids"], *batch["rejected_ids"]],
            "prompt_length": np.concatenate([prompt_lengths, prompt_lengths]),
        }
        return {**self.answers(both), "rows": torch.tensor(len(prompt_lengths))}


def tightest_packs(lengths: list[int], max_width: int, step: int = 8) -> list[list[int]]:
    """The packing of `lengths` into rows of at most `max_width` tokens whose padded batch (rows x
    the fullest row) has the fewest cells, over pack widths from the longest row up in `step`s.
    The widest packs are not always the tightest: conversations of 90 tokens fill rows of 256 to
    180 (30% padding), rows of 184 to 180."""
    longest = max(lengths)
    widths = sorted({longest, *range(longest, max(longest, max_width) + 1, step), max(longest, max_width)})

    def cells(packs: list[list[int]]) -> int:
        return len(packs) * max(sum(lengths[i] for i in pack) for pack in packs)

    return min((first_fit(lengths, width) for width in widths), key=cells)


def first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Row indices in packs whose lengths sum to at most `capacity` (a longer row alone), longest
    first, each into the first pack with room: at most 11/9 of the fewest packs possible (plus
    one), and close to it when rows are short beside the capacity."""
    packs: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = next((p for p, free in enumerate(room) if free >= lengths[i]), None)
        if fits is None:
            packs.append([i])
            room.append(capacity - lengths[i])
        else:
            packs[fits].append(i)
            room[fits] -= lengths[i]
    return packs


def rows_in(batch: dict[str, Any]) -> int:
    """The rows (conversations) a batch holds: a packed batch holds more than its tensors' rows."""
    return int(batch["rows"]) if "rows" in batch else len(batch["labels"])


NOT_MODEL_INPUTS = ("labels", "teacher", "rows")
