"""Packed batches (`train.packing`): several conversations per row, attention kept inside each,
the same loss and gradients as one padded row per conversation."""

import random

import pytest
import torch

from raylane.tasks import get_task
from raylane.tasks.collate import AnswerCollate, first_fit, rows_in, tightest_packs
from raylane.tasks.generation import Generation
from raylane.train.optim import Precision, loss_of


def test_first_fit_places_every_row_once_within_the_width():
    lengths = [random.Random(seed).randint(5, 120) for seed in range(200)] + [300]  # one over the width
    packs = first_fit(lengths, 128)
    placed = sorted(i for pack in packs for i in pack)
    assert placed == list(range(len(lengths)))
    assert [200] in packs  # the row longer than the width stands alone
    assert all(sum(lengths[i] for i in pack) <= 128 for pack in packs if pack != [200])
    # Close to the fewest rows that could hold them (the tokens over the width, rounded up).
    assert len(packs) <= -(-sum(lengths[:200]) // 128) * 1.1 + 2


def conversations(n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    rows, starts = [], []
    for _ in range(n):
        length = rng.randint(6, 30)
        rows.append([rng.randint(1000, 1800) for _ in range(length)])
        starts.append(rng.randint(2, length - 1))
    return {"input_ids": rows, "prompt_length": starts}


def loss_and_grads(model, batch):
    """Through the training loop's own forward (`loss_of`), in fp32."""
    model.zero_grad()
    loss, _ = loss_of(model, batch, get_task("causal_lm"), {}, Precision(torch.device("cpu"), "fp32"))
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("trim", [False, True])
def test_a_packed_batch_has_the_loss_and_gradients_of_the_padded_one(tiny_causal_lm, trim):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm, attn_implementation="sdpa")
    rows = conversations(12)
    padded = AnswerCollate(pad_id=0, trim=trim)(rows)
    packed = AnswerCollate(pad_id=0, trim=trim, pack_width=64)(rows)
    assert len(packed["input_ids"]) < len(padded["input_ids"]) == 12  # fewer rows
    assert packed["input_ids"].shape[1] <= 64 and "attention_mask" not in packed
    assert rows_in(packed) == rows_in(padded) == 12
    target = Generation()
    assert target.weight(packed["labels"]) == target.weight(padded["labels"])  # the same answer tokens
    packed_loss, packed_grads = loss_and_grads(model, packed)
    padded_loss, padded_grads = loss_and_grads(model, padded)
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    assert packed_grads.keys() == padded_grads.keys()
    for name, grad in padded_grads.items():
        assert torch.allclose(packed_grads[name], grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_no_attention_crosses_a_conversation_boundary(tiny_causal_lm, attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm, attn_implementation=attention).eval()
    first, second = list(range(1000, 1020)), list(range(1100, 1115))
    collate = AnswerCollate(pad_id=0, trim=False, pack_width=64)

    def logits_of(a, b):
        batch = collate({"input_ids": [a, b], "prompt_length": [5, 5]})
        assert batch["input_ids"].shape[0] == 1  # both in one row: the longer first
        with torch.no_grad():
            return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]

    before = logits_of(first, second)
    after = logits_of([t + 300 for t in first], second)  # another first conversation, as long
    # The second conversation's logits do not see the first one's tokens ...
    assert torch.allclose(before[20:35], after[20:35], atol=1e-5)
    assert not torch.allclose(before[:20], after[:20], atol=1e-3)
    # ... and are those of the second conversation alone (its positions start again at 0).
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([second])).logits[0]
    assert torch.allclose(before[20:35], alone, atol=1e-5)


def test_the_tightest_packs_pad_no_more_than_one_row_each():
    rng = random.Random(1)
    for _ in range(50):
        lengths = [rng.randint(40, 126) for _ in range(16)]
        packs = tightest_packs(lengths, 256)
        assert sorted(i for pack in packs for i in pack) == list(range(16))
        assert all(sum(lengths[i] for i in pack) <= 256 for pack in packs)
        # Never more cells than one padded row per conversation (the widths tried start there).
        assert len(packs) * max(sum(lengths[i] for i in pack) for pack in packs) <= 16 * max(lengths)
