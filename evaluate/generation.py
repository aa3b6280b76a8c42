"""Evaluation of a chat model (causal_lm) on a split: the loss and perplexity of the reference
answers (per answer token, as training measures them), and what the model's own generations
score against those answers: exact match of the whole reply, its first line, or what
`evaluate.regex` finds in it; when the answers are a handful of labels (a classification asked in
words), accuracy, F1 and a per-label table too. A table of prompts, references and generations
goes to MLflow beside the numbers, because a reviewer reads generations, not only scores.

Scoring runs in Ray Data actors that load the model once (`GenerateBatch`); only the small
columns (losses, counts, replies) come back to the driver.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raylane.config import PipelineConfig
from raylane.continuous import answer_all
from raylane.dataset import DatasetInfo
from raylane.evaluate.report import ClassScores, Evaluation, flat_metrics
from raylane.generate import Sampling
from raylane.hashing import stable_fraction
from raylane.progress import RowProgress
from raylane.tasks.generation import perplexity
from raylane.tracking import RunRef

# References with at most this many distinct values are labels: their F1 and per-label table mean something.
MAX_LABELS = 50


def sampling_of(cfg: PipelineConfig) -> Sampling:
    e = cfg.evaluate
    return Sampling(e.max_new_tokens, e.temperature, e.top_p, tuple(e.stop))


def extract(text: str, how: str, pattern: str = "") -> str:
    """What of a generation is compared with the reference."""
    if how == "first_line":
        return text.strip().split("\n", 1)[0]
    if how == "regex":
        found = re.search(pattern, text)
        if not found:
            return ""
        return found.group(1) if found.groups() else found.group(0)
    return text


def normalize(text: str) -> str:
    """Case, surrounding space and punctuation, and runs of whitespace do not count."""
    return " ".join(text.strip().strip(".!?\"'`").casefold().split())


class GenerateBatch:
    """Ray Data callable class: per row, the reference answer's summed loss and token count, and
    (where `generate` is set) the model's reply to the prompt, through a continuous batch of up to
    `batch_size` rows (`raylane.continuous.answer_all`), as the chat app batches requests."""

    def __init__(self, model_dir: str, sampling: Sampling, batch_size: int, pairs: PairScoring | None = None):
        from raylane.generate import Generator

        self.generator = Generator(model_dir, device=None)  # a GPU where the actor has one
        self.sampling, self.batch_size = sampling, batch_size
        self.pairs = pairs.load(self.generator.device) if pairs else None

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if self.pairs:
            # The pair scoring's forward pass over the chosen answers gives their loss too.
            scored_pairs = self.pairs.score(self.generator.model, batch, self.batch_size)
            losses, tokens = [-logp for logp in scored_pairs["chosen_logp"]], scored_pairs.pop("tokens")
        else:
            scored_pairs = {}
            losses, tokens = self.answer_losses(batch)
        wanted = [i for i, g in enumerate(batch["generate"]) if g]
        # Encoded as the chat app encodes a request: the prompt scored is the prompt served.
        prompts = {i: self.generator.chat_prompt(json.loads(batch["text"].iloc[i])) for i in wanted}
        replies: list[Any] = [None] * len(batch)
        started = time.perf_counter()
        generated = answer_all(self.generator, [prompts[i] for i in wanted], self.sampling, self.batch_size)
        for i, reply in zip(wanted, generated):
            replies[i] = reply
        seconds = (time.perf_counter() - started) / max(1, len(wanted))
        return pd.DataFrame(
            {
                "text": batch["text"],
                "label": batch["label"],
                "loss_sum": losses,
                "tokens": tokens,
                "generation": [r.text if r else None for r in replies],
                "completion_tokens": [r.completion_tokens if r else 0 for r in replies],
                "seconds": [seconds if r else 0.0 for r in replies],
                **scored_pairs,
            }
        )

    def answer_losses(self, batch: pd.DataFrame) -> tuple[list[float], list[int]]:
        """Per row, the reference answer's summed loss and its token count."""
        import torch

        from raylane.tasks.collate import AnswerCollate
        from raylane.tasks.generation import Generation

        target, model = Generation(), self.generator.model
        collate = AnswerCollate(self.generator.tokenizer.pad_token_id or 0)
        losses, tokens = [], []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                part = batch.iloc[start : start + self.batch_size]
                inputs = collate(
                    {"input_ids": list(part["input_ids"]), "prompt_length": part["prompt_length"].to_numpy()}
                )
                inputs = {k: v.to(self.generator.device) for k, v in inputs.items()}
                logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits
                for i in range(len(part)):  # per row: its loss is a sum over its own answer tokens
                    labels = inputs["labels"][i : i + 1]
                    losses.append(float(target.loss(logits[i : i + 1], labels, {})))
                    tokens.append(target.weight(labels))
        return losses, tokens


class PairScoring:
    """Where a split holds preference pairs (`rejected_ids`): per pair, the model's log-prob of
    each answer and its DPO rewards against the reference (the base model training started
    from, `model.name_or_path`), as training measures them."""

    def __init__(self, reference: str, init: str, beta: float):
        self.reference, self.init, self.beta = reference, init, beta
        self.model = None

    def load(self, device) -> PairScoring:
        from transformers import AutoModelForCausalLM

        from raylane.models import load_head_model

        self.model = load_head_model(AutoModelForCausalLM, self.reference, self.init).to(device).eval()
        return self

    def score(self, model, batch: pd.DataFrame, batch_size: int) -> dict[str, list]:
        """Per pair: `PAIR_COLUMNS`, and `tokens`, the chosen answer's token count."""
        import torch

        from raylane.tasks.base import IGNORE
        from raylane.tasks.collate import PairCollate
        from raylane.tasks.preference import Preference

        collate, device = PairCollate(0), next(model.parameters()).device
        # The training loss's own pass over a pair batch, the reference being this frozen model.
        settings = {"reference": lambda forward: forward(self.model), "dpo_beta": self.beta}
        columns: dict[str, list] = {name: [] for name in (*PAIR_COLUMNS, "tokens")}
        with torch.inference_mode():
            for start in range(0, len(batch), batch_size):
                part = batch.iloc[start : start + batch_size]
                inputs = collate(
                    {
                        "input_ids": list(part["input_ids"]),
                        "rejected_ids": list(part["rejected_ids"]),
                        "prompt_length": part["prompt_length"].to_numpy(),
                    }
                )
                inputs = {k: v.to(device) for k, v in inputs.items()}
                fed = {k: v for k, v in inputs.items() if k not in ("labels", "rows")}

                def forward(other=None, fed=fed):
                    return (model if other is None else other)(**fed, use_cache=False).logits

                _, kept = Preference().batch_loss(forward, inputs, settings)
                for name, values in zip(PAIR_COLUMNS, kept.float().cpu().T.tolist()):
                    columns[name].extend(values)
                columns["tokens"].extend((inputs["labels"][: len(part)] != IGNORE).sum(-1).cpu().tolist())
        return columns


# What `Preference.batch_loss` keeps of each pair, in its order.
PAIR_COLUMNS = ("chosen_logp", "rejected_logp", "chosen_reward", "rejected_reward")


def pair_metrics(scored: pd.DataFrame) -> dict[str, float]:
    """The test split's preference metrics, where its rows are pairs (`PairScoring`): training's
    tallies (`Preference.tally`), per pair."""
    import torch

    from raylane.tasks.preference import Preference

    if "chosen_reward" not in scored or not len(scored):
        return {}
    tallies = Preference().tally(torch.tensor(scored[list(PAIR_COLUMNS)].to_numpy(dtype=np.float64)))
    return {name: value / len(scored) for name, value in tallies.items()}


def score_generations(cfg: PipelineConfig, model_dir: str, dataset: DatasetInfo, split: str) -> pd.DataFrame:
    """One row per example of the split: its loss, and its generation when it is among those
    generated (evaluate.generations: the same rows for every model scored on the split)."""
    import ray.data

    from raylane.runtime import on_this_node

    ds = dataset.read_split(split)
    # Preference pairs are scored against the base model too (the DPO reference).
    pairs = "rejected_ids" in ds.schema().names
    ds = ds.select_columns(["text", "label", "input_ids", "prompt_length"] + (["rejected_ids"] if pairs else []))
    share = 1.0
    if cfg.evaluate.generations:
        share = min(1.0, cfg.evaluate.generations / max(1, dataset.manifest.splits.get(split, 1)))

    def flag(batch: pd.DataFrame) -> pd.DataFrame:
        batch["generate"] = [stable_fraction(t) < share for t in batch["text"]]
        return batch

    # Read and flagged before the actors start, as raylane.scoring.score_split does (a serving
    # app beside it would leave the read and flag tasks no CPU).
    scored = (
        ds.map_batches(flag, batch_format="pandas")
        .materialize()
        .map_batches(
            GenerateBatch,
            batch_format="pandas",
            batch_size=cfg.evaluate.batch_size,  # small blocks: progress is counted as each comes back
            compute=ray.data.ActorPoolStrategy(size=cfg.resources.predict_actors),
            fn_constructor_kwargs={
                "model_dir": model_dir,
                "sampling": sampling_of(cfg),
                "batch_size": min(cfg.evaluate.batch_size, 16),
                "pairs": PairScoring(cfg.model.name_or_path, cfg.model.init, cfg.train.dpo.beta) if pairs else None,
            },
            **on_this_node(),
        )
    )
    # At a few rows a second on CPUs, a split takes minutes: say how far it is as blocks come back.
    progress = RowProgress(dataset.manifest.splits.get(split, 0), f"evaluate {split}")
    parts = []
    for part in scored.iter_batches(batch_size=None, batch_format="pandas"):
        parts.append(part)
        progress.add(len(part))
    return pd.concat(parts, ignore_index=True) if parts else scored.to_pandas()


def judged(cfg: PipelineConfig, scored: pd.DataFrame) -> pd.DataFrame:
    """The generated rows, with what was compared (`answer`, `reference`, normalised) and `match`."""
    e = cfg.evaluate
    generated = scored[scored["generation"].notna()].copy()
    generated["answer"] = [normalize(extract(g, e.extract, e.regex)) for g in generated["generation"]]
    generated["reference"] = [normalize(r) for r in generated["label"]]
    generated["match"] = generated["answer"] == generated["reference"]
    return generated


def evaluate_generations(scored: pd.DataFrame, generated: pd.DataFrame, split: str, model_dir: str) -> Evaluation:
    """The numbers, from the scored rows and the judged generations (`judged`)."""
    tokens = int(scored["tokens"].sum())
    mean_loss = float(scored["loss_sum"].sum() / max(1, tokens))
    answers, references = list(generated["answer"]), list(generated["reference"])
    matches = list(generated["match"])
    metrics = {
        "loss": mean_loss,
        "perplexity": perplexity(mean_loss),
        "exact_match": float(np.mean(matches)) if matches else 0.0,
        "generated_rows": float(len(generated)),
        "completion_tokens_mean": float(generated["completion_tokens"].mean()) if len(generated) else 0.0,
        "seconds_per_generation": float(generated["seconds"].mean()) if len(generated) else 0.0,
        **pair_metrics(scored),
    }
    labels = sorted(set(references))
    per_class: dict[str, ClassScores] = {}
    if matches and len(labels) <= MAX_LABELS:
        from sklearn.metrics import precision_recall_fscore_support

        for average in ("macro", "weighted"):
            _, _, f1, _ = precision_recall_fscore_support(
                references, answers, labels=labels, average=average, zero_division=0
            )
            metrics[f"{average}_f1"] = float(f1)
        p, r, f, s = precision_recall_fscore_support(references, answers, labels=labels, zero_division=0)
        per_class = {
            name: ClassScores(precision=float(p[i]), recall=float(r[i]), f1=float(f[i]), support=int(s[i]))
            for i, name in enumerate(labels)
        }
    return Evaluation(
        split=split, model_dir=model_dir, rows=len(scored), labels=[], metrics=metrics, per_class=per_class
    )


def sample_table(cfg: PipelineConfig, generated: pd.DataFrame) -> pd.DataFrame:
    """The first `evaluate.table_rows` judged generations: the prompt (its last user message), the
    reference, the generation, and whether they matched."""
    generated = generated.head(cfg.evaluate.table_rows)
    prompts = [
        next((m["content"] for m in reversed(json.loads(t)) if m["role"] == "user"), "") for t in generated["text"]
    ]
    return pd.DataFrame(
        {
            "prompt": prompts,
            "reference": list(generated["label"]),
            "generation": list(generated["generation"]),
            "match": list(generated["match"]),
        }
    )


def run_generation_evaluation(
    cfg: PipelineConfig,
    model_dir: str,
    dataset: DatasetInfo,
    out_dir: Path,
    mlflow_run: RunRef | None = None,
    split: str = "test",
) -> Evaluation:
    """Score `split`, write `evaluation.json` and `generations.csv` to `out_dir`, log them."""
    scored = score_generations(cfg, model_dir, dataset, split)
    generated = judged(cfg, scored)
    evaluation = evaluate_generations(scored, generated, split, model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = sample_table(cfg, generated)
    table.to_csv(out_dir / "generations.csv", index=False)
    evaluation = evaluation.write(out_dir / "evaluation.json")
    if mlflow_run:
        mlflow_run.log_metrics(flat_metrics(evaluation))
        mlflow_run.log_artifact(evaluation.report_path)
        mlflow_run.log_table(table, "generations.json")
        if evaluation.per_class:
            mlflow_run.log_table(
                pd.DataFrame([{"label": n, **row.model_dump()} for n, row in evaluation.per_class.items()]),
                "per_class.json",
            )
    return evaluation
