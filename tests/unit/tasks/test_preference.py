"""The preference task's parts without Ray: bad pairs quarantined with their reason, the pair
batch, the DPO loss against a hand computation and against a reference equal to the policy (log
2 a pair, under LoRA and with a full copy), and a tiny model that learns to prefer the chosen
answers of a separable set."""

import json
import math

import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForCausalLM

from raylane.chat_template import chat_template_of
from raylane.ingest.transforms import RowSpec
from raylane.models import load_tokenizer
from raylane.tasks import get_task
from raylane.tasks.chat import ANSWER_IN_PROMPT
from raylane.tasks.collate import PairCollate, rows_in
from raylane.tasks.preference import dpo_loss, sequence_logps
from raylane.tokenize import PreferenceTokenizeBatch, tokenizer_definition
from raylane.train.reference import Reference
from tests.chat_rows import BAD_PAIR_LINES, preference_rows
from tests.rows import prepare_row

SPEC = RowSpec(
    n_input_fields=2, task="preference", pii_kinds=("email",), max_chars=500, field_names=("prompt", "rejected")
)
PREFERENCE = get_task("preference").target


def pair_row(prompt, chosen, rejected) -> dict:
    return prepare_row("", [prompt, rejected], chosen, None, SPEC)


def tokenized(tiny_causal_lm, rows: list[dict], max_length: int = 64) -> list[dict]:
    """Prepared rows through the preference tokenizer, as ingest's first pass runs them."""
    table = pa.Table.from_pylist(rows).select(["text", "label", "rejected", "reason", "detail"])
    tokenize = PreferenceTokenizeBatch(
        tokenizer_definition(str(tiny_causal_lm)), chat_template_of(str(tiny_causal_lm)), max_length
    )
    return tokenize(table).to_pylist()


def test_a_pair_keeps_its_prompt_its_chosen_answer_as_label_and_its_rejected_answer_masked():
    row = pair_row("Who wrote to ann@example.org?", "Bob.", "Mail bob@example.com")
    assert row["reason"] == ""
    assert json.loads(row["text"]) == [{"role": "user", "content": "Who wrote to [EMAIL]?"}]
    assert (row["label"], row["rejected"]) == ("Bob.", "Mail [EMAIL]")
    assert row["pii"] == {"email": 2}


def test_the_same_prompt_with_another_rejected_answer_is_another_row_not_a_duplicate():
    first, second = pair_row("Colour of the sky?", "blue", "red"), pair_row("Colour of the sky?", "blue", "green")
    assert first["text"] == second["text"] and first["text_hash"] != second["text_hash"]


@pytest.mark.parametrize(
    "chosen, rejected, reason",
    [("blue", "   ", "empty_rejected"), ("blue", None, "missing_field"), ("", "red", "empty_response")],
)
def test_bad_pairs_are_refused_with_their_reason(chosen, rejected, reason):
    row = pair_row("Colour of the sky?", chosen, rejected)
    assert row["reason"] == reason and row["detail"]


def test_pairs_with_the_same_answers_or_over_max_length_are_quarantined_at_tokenizing(tiny_causal_lm):
    rows = [
        pair_row("Colour of the sky?", "blue", "red"),
        pair_row("Colour of the sea?", "blue", "blue"),
        pair_row("Colour of grass?", "green", "word " * 80),  # the rejected conversation alone is too long
    ]
    out = tokenized(tiny_causal_lm, rows)
    assert [r["reason"] for r in out] == ["", "same_answers", "too_many_tokens"]
    good = out[0]
    assert good["input_ids"][: good["prompt_length"]] == good["rejected_ids"][: good["prompt_length"]]
    assert good["input_ids"] != good["rejected_ids"]
    assert good["length"] == max(len(good["input_ids"]), len(good["rejected_ids"]))
    assert set(BAD_PAIR_LINES) >= {"same_answers", "empty_rejected", "too_many_tokens", "missing_field"}


MESSAGES_SPEC = RowSpec(
    n_input_fields=2,
    task="preference",
    pii_kinds=("email",),
    max_chars=500,
    field_names=("messages", "rejected"),
    label_field="chosen",
)


def test_a_pair_whose_prompt_is_a_conversation_keeps_every_turn_before_both_answers(tiny_causal_lm):
    conversation = [
        {"role": "system", "content": "Answer with one colour."},
        {"role": "user", "content": "Colour of the sky?"},
        {"role": "assistant", "content": "blue"},
        {"role": "user", "content": "And of grass? Ask ann@example.org."},
    ]
    row = prepare_row("", [json.dumps(conversation), "red"], "green", None, MESSAGES_SPEC)
    assert row["reason"] == "" and row["pii"] == {"email": 1}
    assert json.loads(row["text"]) == [*conversation[:3], {"role": "user", "content": "And of grass? Ask [EMAIL]."}]

    (pair,) = tokenized(tiny_causal_lm, [row], max_length=128)
    tokenizer = load_tokenizer(str(tiny_causal_lm))
    prompt = tokenizer.decode(pair["input_ids"][: pair["prompt_length"]])
    assert all(turn in prompt for turn in ("one colour", "sky", "blue", "grass"))
    assert tokenizer.decode(pair["input_ids"][pair["prompt_length"] :]).startswith("green")
    assert tokenizer.decode(pair["rejected_ids"][pair["prompt_length"] :]).startswith("red")


def test_a_pair_whose_conversation_ends_with_an_answer_is_quarantined_not_cut():
    # The answers are the chosen and rejected fields: a final assistant turn in the prompt would be
    # neither prompt nor answer, so the row is quarantined with the reason, never silently shortened.
    conversation = [{"role": "user", "content": "Colour of the sky?"}, {"role": "assistant", "content": "blue"}]
    row = prepare_row("", [json.dumps(conversation), "red"], "green", None, MESSAGES_SPEC)
    assert row["reason"] == ANSWER_IN_PROMPT
    assert "'messages'" in row["detail"] and "'chosen'" in row["detail"]
    # Where the messages field is the label field, the final assistant turn is the answer (SFT).
    sft = RowSpec(n_input_fields=1, task="causal_lm", field_names=("messages",), label_field="messages")
    row = prepare_row("", [json.dumps(conversation)], json.dumps(conversation), None, sft)
    assert row["reason"] == "" and json.loads(row["text"]) == conversation[:1] and row["label"] == "blue"


def test_a_pair_batch_holds_the_chosen_rows_then_the_rejected_ones(tiny_causal_lm):
    rows = tokenized(tiny_causal_lm, [pair_row(r["prompt"], r["chosen"], r["rejected"]) for r in preference_rows(3)])
    batch = PairCollate(0)(
        {
            "input_ids": [r["input_ids"] for r in rows],
            "rejected_ids": [r["rejected_ids"] for r in rows],
            "prompt_length": [r["prompt_length"] for r in rows],
        }
    )
    assert rows_in(batch) == 3 and len(batch["labels"]) == 6 and PREFERENCE.weight(batch["labels"]) == 3
    tokenizer = load_tokenizer(str(tiny_causal_lm))
    answers = [tokenizer.decode([t for t in row if t != -100]) for row in batch["labels"].tolist()]
    expected = [r["chosen"] for r in preference_rows(3)] + [r["rejected"] for r in preference_rows(3)]
    assert [a.replace("[SEP]", "").strip() for a in answers] == expected


def test_the_dpo_loss_is_the_hand_computed_one():
    pc, pr, rc, rr = (torch.tensor(v) for v in ([-1.0, -4.0], [-3.0, -2.0], [-2.0, -3.0], [-2.5, -2.5]))
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # Pair 0: r_c = 0.5 x (-1 + 2) = 0.5, r_r = 0.5 x (-3 + 2.5) = -0.25; -log sigmoid(0.75).
    # Pair 1: r_c = 0.5 x (-4 + 3) = -0.5, r_r = 0.5 x (-2 + 2.5) = 0.25; -log sigmoid(-0.75).
    assert chosen.tolist() == [0.5, -0.5] and rejected.tolist() == [-0.25, 0.25]
    expected = [math.log(1 + math.exp(-0.75)), math.log(1 + math.exp(0.75))]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)


def _pair_batch(tiny_causal_lm, rows: list[dict]) -> dict:
    encoded = tokenized(tiny_causal_lm, [pair_row(r["prompt"], r["chosen"], r["rejected"]) for r in rows])
    return PairCollate(0)(
        {
            "input_ids": [r["input_ids"] for r in encoded],
            "rejected_ids": [r["rejected_ids"] for r in encoded],
            "prompt_length": [r["prompt_length"] for r in encoded],
        }
    )


def _loss(model, reference: Reference, batch: dict, beta: float = 0.1):
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "rows")}

    def forward(other=None):
        return (model if other is None else other)(**inputs, use_cache=False).logits

    return PREFERENCE.batch_loss(forward, batch, {"reference": reference, "dpo_beta": beta})


@pytest.mark.parametrize("lora_on", [True, False], ids=["lora", "full-copy"])
def test_with_the_reference_equal_to_the_policy_a_pairs_loss_is_log_2(tiny_causal_lm, lora_on):
    from raylane.config.schema import LoraSettings
    from raylane.train import lora

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    if lora_on:
        model = lora.apply(model, LoraSettings(r=4, target_modules=["q_proj", "v_proj"]))
    reference = Reference(model, lora_on, lambda: AutoModelForCausalLM.from_pretrained(tiny_causal_lm), seed=0)
    batch = _pair_batch(tiny_causal_lm, preference_rows(4))
    loss, kept = _loss(model, reference, batch)
    assert float(loss.detach()) == pytest.approx(4 * math.log(2), rel=1e-5)
    tally = PREFERENCE.tally(kept)
    assert tally["preference_accuracy"] == 0 and tally["reward_margin"] == pytest.approx(0, abs=1e-5)
    logps = sequence_logps(
        model(**{k: v for k, v in batch.items() if k not in ("labels", "rows")}).logits, batch["labels"]
    )
    assert tally["chosen_logp"] == pytest.approx(float(logps[:4].sum()), rel=1e-5)


def test_training_on_the_dpo_loss_learns_to_prefer_the_chosen_answers_of_held_out_pairs(tiny_causal_lm):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    reference = Reference(model, False, lambda: AutoModelForCausalLM.from_pretrained(tiny_causal_lm), seed=0)
    train, held_out = (
        _pair_batch(tiny_causal_lm, preference_rows(24)),
        _pair_batch(tiny_causal_lm, preference_rows(12, 24)),
    )
    with torch.no_grad():
        before = PREFERENCE.tally(_loss(model, reference, held_out, beta=0.5)[1])["preference_accuracy"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(15):
        loss, _ = _loss(model, reference, train, beta=0.5)
        (loss / 24).backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after = PREFERENCE.tally(_loss(model, reference, held_out, beta=0.5)[1])["preference_accuracy"]
    assert before == 0 and after / 12 >= 0.9
