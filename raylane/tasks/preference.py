"""Preference pairs (the preference task): a conversation, the answer a person preferred and the
one they rejected, learned by direct preference optimisation (DPO, Rafailov et al. 2023).

A task of its own rather than an objective of causal_lm, because the rows differ (two answers,
checked and quarantined together), the batches differ (each pair is two sequences), and so do
the loss, the metrics and the gate; what it shares with causal_lm (the chat template, the
prompt's checks, generating, serving) it inherits from `ChatInputs` and `Generation`.

DPO needs the probability a frozen reference (the model training started from) gives each
answer: `train.reference.Reference` provides it to `batch_loss`. With r = beta x (log p_policy -
log p_reference) of an answer, the loss of a pair is -log sigmoid(r_chosen - r_rejected): at the
start, policy = reference and every pair's loss is log 2. Its metrics: preference accuracy (the
share of pairs with r_chosen > r_rejected), the reward margin (r_chosen - r_rejected), and the
policy's log-probabilities of both answers (a chosen log-prob that falls as well is DPO's known
failure: both answers unlearned, the rejected one faster).
"""

from __future__ import annotations

from typing import Any

from raylane.chat_template import clean_message
from raylane.hashing import stable_hash
from raylane.pii import mask_pii
from raylane.tasks.base import IGNORE
from raylane.tasks.chat import ChatInputs
from raylane.tasks.generation import Generation
from raylane.tasks.text import MISSING_FIELD, TOO_LONG

EMPTY_REJECTED = "empty_rejected"
# Sums a preference epoch tallies per pair (see `Preference.tally`).
PAIR_TALLIES = ("preference_accuracy", "reward_margin", "chosen_logp", "rejected_logp")


def rejected_field(data) -> str:
    return data.rejected_field or "rejected"


class PreferenceInputs(ChatInputs):
    """The conversation before the answers (as `ChatInputs` makes it), and the rejected answer
    from `data.rejected_field`, cleaned and masked as the chosen one is; the chosen answer is the
    label. Shards hold both whole conversations as token ids (`input_ids`: with the chosen
    answer, `rejected_ids`: with the rejected one)."""

    kind = "preference pairs"
    config_keys = frozenset({"data.prompt_template", "data.rejected_field"})

    def fields(self, data) -> list[str]:
        return [*data.text_fields, rejected_field(data)]

    def describe(self, data) -> str:
        return f"prompt fields {data.text_fields}, rejected answer {rejected_field(data)!r}; " + super().describe(data)

    def prepare(
        self, columns: list, spec, errors: list[str], sources: list[str], blobs: list | None = None
    ) -> dict[str, Any]:
        out = super().prepare(columns[:-1], spec, errors, sources, blobs)
        rejected = []
        for i, raw in enumerate(columns[-1].to_pylist()):
            answer = clean_message(raw) if isinstance(raw, str) else ""
            if not out["reason"][i]:
                if raw is None:
                    out["reason"][i], out["detail"][i] = MISSING_FIELD, "the rejected answer is missing"
                elif not answer:
                    out["reason"][i], out["detail"][i] = EMPTY_REJECTED, "the rejected answer is empty"
                elif out["n_chars"][i] + len(answer) > spec.max_chars:
                    n = out["n_chars"][i] + len(answer)
                    out["reason"][i], out["detail"][i] = TOO_LONG, f"{n} characters > data.max_chars={spec.max_chars}"
            if spec.pii_kinds and answer:
                answer, found = mask_pii(answer, spec.pii_kinds)
                for kind, n in found.items():
                    out["pii"][kind][i] += n
            rejected.append(answer)
            out["n_chars"][i] += len(answer)
            # The same prompt may come with several pairs: a duplicate is the same prompt and the
            # same rejected answer (then two chosen answers conflict).
            out["hash"][i] = stable_hash(out["text"][i] + "\x1f" + answer)
        out["rejected"] = rejected
        return out

    def encoder(self, name_or_path: str, max_length: int):
        from raylane.tokenize import PreferenceTokenizeBatch, preference_tokenize_batch

        _, kwargs, _, digest = super().encoder(name_or_path, max_length)
        return preference_tokenize_batch, kwargs, PreferenceTokenizeBatch, digest

    def shard_columns(self, batch) -> dict[str, Any]:
        return {**super().shard_columns(batch), "rejected_ids": batch.column("rejected_ids")}

    columns = {
        **ChatInputs.columns,
        "label": "string (the chosen answer)",
        "input_ids": "list<int32> (the rendered conversation with the chosen answer)",
        "rejected_ids": "list<int32> (the rendered conversation with the rejected answer)",
        "length": "int32 (the longer of the two)",
        "prompt_length": "int32 (tokens before either answer: no loss on them)",
    }

    def collate(self, processor, target, n_labels: int, extras: dict[str, Any], pack_width: int = 0):
        from raylane.tasks.collate import PairCollate

        return PairCollate(processor.pad_token_id or 0)


def sequence_logps(logits, labels):
    """Each row's summed log-probability of its answer tokens (labels other than -100), from
    logits aligned with the labels (`AnswerCollate`'s), in fp32."""
    import torch

    mask = labels != IGNORE
    picked = torch.gather(logits.float().log_softmax(-1), -1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float):
    """(each pair's loss, the chosen answers' rewards, the rejected answers' rewards): the DPO loss
    -log sigmoid(r_chosen - r_rejected), with r = beta x (log p_policy - log p_reference)."""
    import torch

    chosen = beta * (policy_chosen - reference_chosen)
    rejected = beta * (policy_rejected - reference_rejected)
    return -torch.nn.functional.logsigmoid(chosen - rejected), chosen, rejected


class Preference(Generation):
    """The chosen answer as the label (checked as `Generation` checks an answer), learned against
    the rejected one. Evaluation still generates and scores exact match against the chosen
    answer, beside the pair metrics; the gate adds `gate.min_preference_accuracy`, and a chat
    model (causal_lm) as the champion is compared on exact match."""

    metrics = ("preference_accuracy", "reward_margin")
    default_metric = "preference_accuracy"
    lower_is_better = ()
    # What max_regression compares with the champion (re-scored on these pairs), often the chat
    # model the run started from: its preference accuracy against itself is 0, so only the
    # answers say whether preference tuning made the model better or worse.
    headline = "exact_match"
    rescores = ("causal_lm",)
    config_keys = Generation.config_keys | {"train.dpo", "gate.min_preference_accuracy"}
    tallied = PAIR_TALLIES

    def weight(self, labels) -> int:
        """Pairs in a batch (its labels hold each pair's chosen row, then its rejected one)."""
        return len(labels) // 2

    def batch_loss(self, forward, batch: dict[str, Any], settings: dict[str, Any]):
        """The pairs' summed DPO loss, and per pair (policy log-prob of the chosen answer, of the
        rejected one, the chosen reward, the rejected reward)."""
        import torch

        labels = batch["labels"]
        n = len(labels) // 2
        policy = sequence_logps(forward(), labels)
        reference = sequence_logps(settings["reference"](forward), labels)
        losses, chosen, rejected = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], settings["dpo_beta"])
        return losses.sum(), torch.stack([policy[:n], policy[n:], chosen, rejected], 1).detach()

    def tally(self, outputs) -> dict[str, float]:
        chosen_logp, rejected_logp, chosen, rejected = outputs.float().T
        return {
            "preference_accuracy": float((chosen > rejected).sum()),
            "reward_margin": float((chosen - rejected).sum()),
            "chosen_logp": float(chosen_logp.sum()),
            "rejected_logp": float(rejected_logp.sum()),
        }

    def loss_metrics(self, mean_loss: float) -> dict[str, float]:
        return {}  # the DPO loss is no answer's likelihood: no perplexity follows from it

    def rates(self, units: float, seconds: float) -> dict[str, float]:
        return {"pairs_per_s": units / seconds}

    def gate_rules(self, gate, evaluation) -> list[tuple[str, bool, str]]:
        rules = super().gate_rules(gate, evaluation)
        if gate.min_preference_accuracy:
            value = evaluation.metrics["preference_accuracy"]
            ok = value >= gate.min_preference_accuracy
            sign = ">=" if ok else "<"
            rules.append(
                (
                    "gate.min_preference_accuracy",
                    ok,
                    f"test preference accuracy {value:.4f} {sign} gate.min_preference_accuracy "
                    f"{gate.min_preference_accuracy}",
                )
            )
        return rules
