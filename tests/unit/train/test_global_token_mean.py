"""A language model's step loss is the sum over answer tokens divided by the answer tokens of every
worker (`train.optim.step_units`), so two DDP workers whose batches hold unequal answer tokens
reach the gradient one process reaches on both batches. Real torch.distributed (gloo), two
processes."""

import os

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from raylane.tasks import get_task
from raylane.tasks.collate import AnswerCollate
from raylane.train.optim import Precision, accumulate, loss_of
from tests.gloo import gloo_group, run_workers

CPU = Precision(torch.device("cpu"), "fp32")
TASK = get_task("causal_lm")


def _batches() -> list[dict[str, torch.Tensor]]:
    """Worker 0's batch: 2 rows with 10 answer tokens each; worker 1's: 2 rows with 1 and 2."""
    rng = np.random.default_rng(0)
    collate = AnswerCollate(pad_id=0, trim=False)

    def batch(prompt_lengths, answer_lengths):
        rows = [rng.integers(5, 200, size=p + a) for p, a in zip(prompt_lengths, answer_lengths)]
        return collate({"input_ids": rows, "prompt_length": np.array(prompt_lengths)})

    return [batch([6, 9], [10, 10]), batch([7, 4], [1, 2])]


def _model(path: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()  # no dropout: both ways must see the same network
    return model


def _loss(model, batch):
    return loss_of(model, batch, TASK, {}, CPU)


def _worker(rank: int, rendezvous: str, model_path: str, out_dir: str) -> None:
    with gloo_group(rank, rendezvous):
        model = DistributedDataParallel(_model(model_path))
        accumulate(model, [_batches()[rank]], _loss, CPU, TASK.target.weight)
        grads = [p.grad.detach() for p in model.module.parameters() if p.grad is not None]
        torch.save(grads, os.path.join(out_dir, f"grads-{rank}.pt"))


def test_two_workers_with_uneven_answer_tokens_reach_the_gradient_of_one_process(tiny_causal_lm, tmp_path):
    model = _model(str(tiny_causal_lm))
    # One process, both batches: the mean over all 23 answer tokens.
    accumulate(model, _batches(), _loss, CPU, TASK.target.weight)
    alone = [p.grad.detach() for p in model.parameters() if p.grad is not None]

    run_workers(_worker, (str(tiny_causal_lm), str(tmp_path)), tmp_path)
    for rank in (0, 1):
        for together, single in zip(torch.load(tmp_path / f"grads-{rank}.pt"), alone, strict=True):
            torch.testing.assert_close(together, single, rtol=1e-5, atol=1e-7)


def test_the_mean_of_per_worker_means_would_differ(tiny_causal_lm):
    """Why the count is global: each worker's own token mean, averaged as DDP averages, weighs
    worker 1's 3 tokens as much as worker 0's 20, and the gradient moves."""
    model = _model(str(tiny_causal_lm))
    accumulate(model, _batches(), _loss, CPU, TASK.target.weight)
    alone = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    per_worker = []
    for batch in _batches():
        model.zero_grad(set_to_none=True)
        accumulate(model, [batch], _loss, CPU, TASK.target.weight)
        per_worker.append([p.grad.detach().clone() for p in model.parameters() if p.grad is not None])
    averaged = [(a + b) / 2 for a, b in zip(*per_worker)]
    assert max(float((x - y).abs().max()) for x, y in zip(averaged, alone)) > 1e-4
