"""Batch generation (`raylane predict` with a chat model): each row of the input files becomes a
conversation exactly as ingest builds one (a `messages` column, or the prompt fields through
`data.prompt_template`), Ray Data actors generate a reply to it with the model's own generation
settings (those it was evaluated with), and the rows are written to Parquet beside the
conversation, the reply, its token counts and why it ended.

A row that cannot become a prompt (no text, an unknown role, a conversation the chat template
refuses, a prompt over `data.max_length` tokens) is written under `_quarantine/` with its reason
instead: every input row is in one or the other. (Parquet readers skip a directory whose name
starts with `_`, so the predictions read as one table.)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data

from raylane.chat_template import TemplateRefused
from raylane.config import PipelineConfig
from raylane.progress import RowProgress
from raylane.runtime import on_this_node
from raylane.sources import read_source
from raylane.tasks import get_task
from raylane.tasks.chat import ChatInputs
from raylane.tokenize import TEMPLATE_REFUSED, TOO_MANY_TOKENS

QUARANTINE_DIR = "_quarantine"
ANSWER_COLUMNS = ("messages", "generation", "prompt_tokens", "completion_tokens", "finish_reason")


def _conversations(batch: pd.DataFrame, fields: list[str], template: str) -> pd.DataFrame:
    """The row's conversation as JSON `messages`, or the reason (and detail) it has none."""
    # Missing cells read as None, NaN or pd.NA, by reader and dtype: all are "missing" to ingest.
    columns = [[_cell(v) for v in batch[f]] for f in fields]
    found = [ChatInputs.conversation(raw, template, fields) for raw in zip(*columns)]
    return batch.assign(
        messages=[json.dumps(m, ensure_ascii=False) if m else "" for m, _, _ in found],
        reason=[reason for _, reason, _ in found],
        detail=[detail for _, _, detail in found],
    )


def _cell(value):
    """A prompt field's value as ingest reads it: text, None when missing, and a JSONL file's list
    of messages (read as a list of structs) as its JSON text."""
    if isinstance(value, list | np.ndarray):
        return json.dumps([dict(m) if isinstance(m, dict) else m for m in value], ensure_ascii=False)
    return None if value is None or pd.isna(value) else value


class GenerateRows:
    """Ray Data callable class: the model loaded once per actor; per batch, each conversation
    encoded as the chat app encodes a request, generated through a continuous batch of up to
    `batch_size` rows (`raylane.continuous.answer_all`: a row that ends makes room for the next),
    shortest prompts first, the rows kept in their order."""

    def __init__(self, model_dir: str, max_prompt_tokens: int, batch_size: int):
        from raylane.generate import Generator

        self.generator = Generator(model_dir, device=None)  # a GPU where the actor has one
        self.max_prompt_tokens, self.batch_size = max_prompt_tokens, batch_size

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        reasons, details = list(batch["reason"]), list(batch["detail"])
        prompts: dict[int, list[int]] = {}
        for i, messages in enumerate(batch["messages"]):
            if reasons[i]:
                continue
            try:
                ids = self.generator.chat_prompt(json.loads(messages))
            except TemplateRefused as refused:
                reasons[i], details[i] = TEMPLATE_REFUSED, str(refused)[:500]
                continue
            if len(ids) > self.max_prompt_tokens:
                reasons[i], details[i] = (
                    TOO_MANY_TOKENS,
                    f"{len(ids)} prompt tokens > data.max_length={self.max_prompt_tokens}",
                )
                continue
            prompts[i] = ids
        from raylane.continuous import answer_all

        order = sorted(prompts, key=lambda i: len(prompts[i]))
        generated = answer_all(self.generator, [prompts[i] for i in order], self.generator.defaults, self.batch_size)
        answers = dict(zip(order, generated))
        n = len(batch)
        return batch.assign(
            reason=reasons,
            detail=details,
            generation=[answers[i].text if i in answers else None for i in range(n)],
            prompt_tokens=[answers[i].prompt_tokens if i in answers else 0 for i in range(n)],
            completion_tokens=[answers[i].completion_tokens if i in answers else 0 for i in range(n)],
            finish_reason=[answers[i].finish_reason if i in answers else None for i in range(n)],
        )


def generate_files(cfg: PipelineConfig, model_dir: str, source: str, staging: Path) -> tuple[int, dict[str, int]]:
    """Generate for every row of `source` into Parquet files under `staging`, the rows that could
    not be prompted under `staging/_quarantine`. Returns (rows answered, quarantined by reason)."""
    fields = get_task(cfg.task).inputs.prompt_fields(cfg.data)  # a preference row's answers are not asked for
    conversations = (
        read_source(source, cfg.data, required=fields)
        .map_batches(
            _conversations, batch_format="pandas", fn_kwargs={"fields": fields, "template": cfg.data.prompt_template}
        )
        .materialize()  # small, and counted: the progress line needs the total
    )
    answered = conversations.map_batches(
        GenerateRows,
        batch_format="pandas",
        batch_size=cfg.evaluate.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.resources.predict_actors),
        fn_constructor_kwargs={
            "model_dir": model_dir,
            "max_prompt_tokens": cfg.data.max_length,
            "batch_size": min(cfg.evaluate.batch_size, 16),
        },
        **on_this_node(),
    )
    progress = RowProgress(conversations.count(), "predict")
    staging.mkdir(parents=True, exist_ok=True)
    rows, quarantined = 0, Counter()
    for index, part in enumerate(answered.iter_batches(batch_size=None, batch_format="pandas")):
        bad = part["reason"] != ""
        if (~bad).any():
            _write(part[~bad].drop(columns=["reason", "detail"]), staging / f"part-{index:05d}.parquet")
            rows += int((~bad).sum())
        if bad.any():
            kept = part[bad].drop(columns=[c for c in ANSWER_COLUMNS if c != "messages"])
            _write(kept, staging / QUARANTINE_DIR / f"part-{index:05d}.parquet")
            quarantined.update(part.loc[bad, "reason"])
        progress.add(len(part))
    return rows, dict(quarantined)


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
