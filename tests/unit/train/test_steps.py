import random

import numpy as np
import pytest
import torch

from raylane.models import load_classifier, load_tokenizer
from raylane.tasks import get_task
from raylane.train import checkpoint
from raylane.train.loop import EarlyStopping
from raylane.train.optim import (
    Precision,
    accumulate,
    build_optimizer,
    build_scheduler,
    cpu_has_native_bf16,
    groups,
    loss_of,
    lr_factor,
    optimizer_step,
)

CPU = Precision(torch.device("cpu"), "fp32")  # exact comparisons need fp32
TASK = get_task("text_classification")


def _loss(model, batch):
    return loss_of(model, batch, TASK, {}, CPU)


@pytest.fixture
def model_and_batch(tiny_model):
    torch.manual_seed(0)
    model = load_classifier(str(tiny_model), ["a", "b", "c"])
    model.eval()  # no dropout: the two ways of computing a gradient must see the same network
    tokenizer = load_tokenizer(str(tiny_model))
    texts = [f"sample number {i} with {'some ' * (i % 4)}words" for i in range(8)]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    batch = {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": torch.tensor([i % 3 for i in range(8)]),
    }
    return model, batch


def _slice(batch, rows):
    return {k: v[rows] for k, v in batch.items()}


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("split", [[4, 4], [5, 3], [2, 2, 2, 2]])
def test_accumulated_micro_batches_give_the_full_batch_gradient(model_and_batch, split):
    model, batch = model_and_batch
    accumulate(model, [batch], _loss, CPU)
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    bounds = np.cumsum([0, *split])
    accumulate(model, [_slice(batch, slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])], _loss, CPU)
    for g_full, g_acc in zip(full, _grads(model), strict=True):
        torch.testing.assert_close(g_acc, g_full, rtol=1e-4, atol=1e-6)


def test_checkpoint_round_trip_restores_optimizer_scheduler_and_rng(model_and_batch, tiny_model, tmp_path):
    model, batch = model_and_batch
    optimizer = build_optimizer(model, 1e-3, 0.01)
    scheduler = build_scheduler(optimizer, warmup=2, total=10, schedule="cosine")
    for _ in range(3):
        accumulate(model, [batch], _loss, CPU)
        optimizer_step(model, optimizer, scheduler, CPU, max_grad_norm=1.0)
    stopper = EarlyStopping(3, "max")
    stopper.should_stop(0.5)
    stopper.should_stop(0.4)
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    checkpoint.save(
        tmp_path,
        model,
        load_tokenizer(str(tiny_model)),
        optimizer,
        scheduler,
        epoch=4,
        scaler=CPU.scaler,
        early_stopping=stopper.state_dict(),
    )
    expected_draws = (random.random(), float(np.random.rand()), torch.rand(3))

    random.seed(0), np.random.seed(0), torch.manual_seed(0)  # disturb every generator
    restored = load_classifier(str(tmp_path / checkpoint.MODEL_DIR), ["a", "b", "c"])
    optimizer2 = build_optimizer(restored, 1e-3, 0.01)
    scheduler2 = build_scheduler(optimizer2, warmup=2, total=10, schedule="cosine")
    state = checkpoint.load_state(tmp_path)
    optimizer2.load_state_dict(state["optimizer"])
    scheduler2.load_state_dict(state["scheduler"])
    stopper2 = EarlyStopping(3, "max")
    stopper2.load_state_dict(state["early_stopping"])
    checkpoint.set_rng_state(state["rng"])

    assert (random.random(), float(np.random.rand())) == expected_draws[:2]
    assert torch.equal(torch.rand(3), expected_draws[2])
    assert state["epoch"] == 4
    assert scheduler2.last_epoch == scheduler.last_epoch == 3
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    for group, group2 in zip(
        optimizer.state_dict()["state"].values(), optimizer2.state_dict()["state"].values(), strict=True
    ):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(group2[key], group[key], rtol=0, atol=0)
    for p, p2 in zip(model.parameters(), restored.parameters(), strict=True):
        torch.testing.assert_close(p2, p, rtol=0, atol=0)
    assert stopper2.state_dict() == {"best": 0.5, "bad_epochs": 1}


@pytest.mark.parametrize(
    "schedule, step, factor",
    [
        ("linear", 0, 0.5),  # warmup: (0 + 1) / (1 + 1)
        ("linear", 1, 1.0),  # peak right after warmup
        ("linear", 6, 0.5),
        ("linear", 11, 0.0),
        ("cosine", 1, 1.0),
        ("cosine", 6, 0.5),  # half way down the cosine
        ("cosine", 11, 0.0),
    ],
)
def test_lr_schedule(schedule, step, factor):
    assert lr_factor(step, warmup=1, total=11, schedule=schedule) == pytest.approx(factor)


def test_cosine_stays_above_linear_early_and_both_decay_monotonically():
    linear = [lr_factor(s, 10, 100, "linear") for s in range(10, 101)]
    cosine = [lr_factor(s, 10, 100, "cosine") for s in range(10, 101)]
    assert all(a >= b for a, b in zip(linear, linear[1:])) and all(a >= b for a, b in zip(cosine, cosine[1:]))
    assert cosine[20] > linear[20]


@pytest.mark.parametrize(
    "mode, values, patience, stops_at",
    [
        ("max", [0.5, 0.6, 0.6, 0.55], 2, 3),  # equal is not better
        ("max", [0.5, 0.6, 0.7, 0.8], 1, None),
        ("min", [1.0, 0.9, 0.95, 0.8, 0.85, 0.86], 2, 5),
        ("max", [0.5, 0.4, 0.3], 0, None),  # patience 0 never stops
    ],
)
def test_early_stopping(mode, values, patience, stops_at):
    stopper = EarlyStopping(patience, mode)
    stopped = next((i for i, v in enumerate(values) if stopper.should_stop(v)), None)
    assert stopped == stops_at


def test_groups():
    assert list(groups(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(groups([], 3)) == []


EPYC_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
OLD_XEON_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
GRAVITON3_FEATURES = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16(EPYC_FLAGS)
    assert cpu_has_native_bf16(GRAVITON3_FEATURES)
    assert not cpu_has_native_bf16(OLD_XEON_FLAGS)  # AVX-512 alone: oneDNN would emulate bf16
    assert not cpu_has_native_bf16("")


def test_cpu_precision():
    cpu = torch.device("cpu")
    assert Precision(cpu, "auto").name == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert Precision(cpu, "bf16").name == "bf16"
    for wanted in ("fp16", "fp32"):  # fp16 autocast is for GPUs
        assert Precision(cpu, wanted).name == "fp32"
    for wanted in ("auto", "bf16", "fp16", "fp32"):
        assert not Precision(cpu, wanted).scaler.is_enabled()  # bf16 needs no loss scaling


def test_a_bf16_step_on_cpu_runs_in_bf16_and_keeps_fp32_weights(model_and_batch):
    model, batch = model_and_batch
    bf16 = Precision(torch.device("cpu"), "bf16")
    loss, logits = loss_of(model, batch, TASK, {}, bf16)
    assert logits.dtype == torch.bfloat16
    loss.backward()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    fp32_loss, _ = _loss(model, batch)
    assert float(loss.detach()) == pytest.approx(float(fp32_loss.detach()), rel=0.05)


def test_loss_falls_on_a_tiny_separable_set(tiny_model):
    torch.manual_seed(0)
    model = load_classifier(str(tiny_model), ["cats", "rockets"])
    tokenizer = load_tokenizer(str(tiny_model))
    texts = [f"the cat sat on mat {i}" for i in range(8)] + [f"rocket engines launch orbit {i}" for i in range(8)]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    batch = {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": torch.tensor([0] * 8 + [1] * 8),
    }
    optimizer = build_optimizer(model, 3e-3, 0.0)
    scheduler = build_scheduler(optimizer, warmup=2, total=30, schedule="cosine")
    losses = []
    for _ in range(30):
        model.train()
        ((loss_sum, _),) = accumulate(model, [batch], _loss, CPU)
        losses.append(float(loss_sum.detach()) / len(batch["labels"]))
        optimizer_step(model, optimizer, scheduler, CPU, max_grad_norm=1.0)
    model.eval()
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1)
    assert losses[-1] < 0.25 * losses[0]
    assert torch.equal(predicted, batch["labels"])
