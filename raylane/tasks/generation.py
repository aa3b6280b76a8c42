"""An answer per conversation (the causal_lm task): the target is the assistant's reply, learned
token by token. The loss is the cross-entropy of each answer token given the tokens before it,
summed over answer tokens only (prompt and padding carry the label -100), and every mean is per
answer token, not per row. Training ranks by validation loss or perplexity; evaluation adds
what the generations score (`raylane.evaluate.generation`).

The answer is the label column: a response field as it is, or the final assistant message of a
`messages` field (then `data.label_field` names that same column).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from raylane.chat_template import clean_message
from raylane.pii import mask_pii
from raylane.tasks.base import IGNORE, LabelCheck, Target
from raylane.tasks.chat import ROLES, UNKNOWN_ROLE, parse_messages
from raylane.tasks.engine import GENERATING
from raylane.tasks.text import MISSING_FIELD

EMPTY_RESPONSE = "empty_response"
NO_FINAL_ANSWER = "no_final_answer"


def perplexity(mean_loss: float) -> float:
    return math.exp(min(mean_loss, 50.0))  # capped: an untrained model's loss would overflow


class Generation(Target):
    metrics = ("perplexity",)
    default_metric = "perplexity"
    lower_is_better = ("perplexity",)
    headline = "exact_match"
    config_keys = frozenset({"gate.min_exact_match", "gate.max_perplexity"})

    engine = GENERATING

    def check_label(self, raw: str | None, separator: str = "") -> LabelCheck:
        if raw is None:
            return LabelCheck("", MISSING_FIELD, "response is missing")
        messages = parse_messages(raw)
        if messages is not None:
            last = messages[-1]
            if last.get("role") not in ROLES:
                return LabelCheck("", UNKNOWN_ROLE, f"the last message has role {str(last.get('role'))[:40]!r}")
            if last.get("role") != "assistant":
                return LabelCheck(
                    "", NO_FINAL_ANSWER, f"the conversation ends with a {last['role']} message, not the assistant's"
                )
            raw = last.get("content") if isinstance(last.get("content"), str) else ""
        answer = clean_message(raw)
        if not answer:
            return LabelCheck("", EMPTY_RESPONSE, "the response is empty")
        return LabelCheck(answer)

    def mask_label(self, label: str, pii_kinds: tuple[str, ...]) -> tuple[str, dict[str, int]]:
        """An answer the model learns to write must not teach it anyone's address."""
        return mask_pii(label, pii_kinds) if pii_kinds else (label, {})

    def encode(self, labels, label_set: list[str]):
        return labels  # the answer text, the reference generations are compared with

    def problem_type(self) -> str:
        return "causal_lm"

    def weight(self, labels) -> int:
        """Answer tokens in a batch: what its loss is summed over."""
        return int((labels != IGNORE).sum())

    def loss(self, logits, labels, settings: dict[str, Any]):
        """Summed next-token cross-entropy over the answer tokens. `labels` are the targets of
        the logits as they are (`AnswerCollate` aligns them: no shift here)."""
        import torch

        return torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )

    def rates(self, units: float, seconds: float) -> dict[str, float]:
        return {"answer_tokens_per_s": units / seconds}

    def loss_metrics(self, mean_loss: float) -> dict[str, float]:
        """The metrics that follow from the mean loss: what training can measure of a language
        model (its logits are far too big to gather; generations are scored at evaluation)."""
        return {"perplexity": perplexity(mean_loss)}

    def settings(self, cfg) -> dict[str, Any]:
        """The generation settings evaluation used: serving starts from them."""
        e = cfg.evaluate
        generation = {
            "max_new_tokens": e.max_new_tokens,
            "temperature": e.temperature,
            "top_p": e.top_p,
            "stop": e.stop,
            "dtype": e.dtype,
        }
        return {"generation": generation}

    def output_example(self, labels: list[str], extras: dict[str, Any]) -> dict[str, list]:
        return {"reply": ["Hello! How can I help?"]}

    def shard_truth(self, values, n_labels: int) -> np.ndarray:
        return np.asarray(values, dtype=object)

    def gate_rules(self, gate, evaluation) -> list[tuple[str, bool, str]]:
        rules = []
        if gate.min_exact_match:
            value = evaluation.metrics["exact_match"]
            ok = value >= gate.min_exact_match
            rules.append(
                (
                    "gate.min_exact_match",
                    ok,
                    f"test exact match {value:.4f} {'>=' if ok else '<'} gate.min_exact_match {gate.min_exact_match}",
                )
            )
        if gate.max_perplexity:
            value = evaluation.metrics["perplexity"]
            ok = value <= gate.max_perplexity
            rules.append(
                (
                    "gate.max_perplexity",
                    ok,
                    f"test perplexity {value:.3f} {'<=' if ok else '>'} gate.max_perplexity {gate.max_perplexity}",
                )
            )
        return rules
