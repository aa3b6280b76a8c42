"""Preference tuning on two workers (real torch.distributed, gloo, two processes) holding unequal
numbers of pairs: under DDP with LoRA, the DPO loss against the reference (the same wrapped model,
its adapters off) reaches the gradient one process reaches on all pairs, and the epoch's preference
metrics, reduced over the workers, equal that one process's; under FSDP2 without LoRA, against a
frozen copy of the base sharded as the policy is, the gradient too."""

import json
import os

import numpy as np
import pytest
import torch
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from raylane.config.schema import LoraSettings
from raylane.tasks import get_task
from raylane.tasks.collate import PairCollate
from raylane.train import lora, sharding
from raylane.train.optim import Precision, accumulate, loss_of
from raylane.train.records import epoch_record
from raylane.train.reference import Reference
from tests.gloo import gloo_group, run_workers

CPU = Precision(torch.device("cpu"), "fp32")
TASK = get_task("preference")


def _batches() -> list[dict[str, torch.Tensor]]:
    """Worker 0's batch: 3 pairs; worker 1's: 1 pair (answers of 1 to 4 tokens)."""
    rng = np.random.default_rng(0)

    def batch(n):
        prompts = [rng.integers(5, 200, size=int(rng.integers(4, 9))) for _ in range(n)]

        def answered(prompt):
            return np.concatenate([prompt, rng.integers(5, 200, size=int(rng.integers(1, 5)))])

        return PairCollate(0)(
            {
                "input_ids": [answered(p) for p in prompts],
                "rejected_ids": [answered(p) for p in prompts],
                "prompt_length": np.array([len(p) for p in prompts]),
            }
        )

    return [batch(3), batch(1)]


def _policy(path: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)  # the same adapters in every process
    settings = LoraSettings(r=4, dropout=0.0, target_modules=["q_proj", "v_proj", "gate_proj"])
    model = lora.apply(AutoModelForCausalLM.from_pretrained(path), settings)
    model.eval()  # no dropout: both ways must see the same network
    with torch.no_grad():  # adapters that have moved: the policy differs from the reference
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn_like(parameter) * 0.05)
    return model


def _step(model, batches):
    settings = {"reference": Reference(model, True, lambda: None, seed=0), "dpo_beta": 0.5}

    def loss(m, batch):
        return loss_of(m, batch, TASK, settings, CPU)

    results = accumulate(model, batches, loss, CPU, TASK.target.weight)
    record = epoch_record(TASK)
    for batch, (loss_sum, kept) in zip(batches, results):
        record.add(float(loss_sum.detach()), kept, batch)
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    return grads, record.metrics([], {}, "val_")


def _worker(rank: int, rendezvous: str, model_path: str, out_dir: str) -> None:
    with gloo_group(rank, rendezvous):
        model = DistributedDataParallel(_policy(model_path))
        grads, metrics = _step(model, [_batches()[rank]])
        torch.save(grads, os.path.join(out_dir, f"grads-{rank}.pt"))
        with open(os.path.join(out_dir, f"metrics-{rank}.json"), "w") as f:
            json.dump(metrics, f)


def test_two_workers_with_uneven_pairs_reach_the_gradient_and_metrics_of_one_process(tiny_causal_lm, tmp_path):
    alone, metrics = _step(_policy(str(tiny_causal_lm)), _batches())
    assert len(alone) > 0 and metrics["val_reward_margin"] != 0  # the adapters moved the policy

    run_workers(_worker, (str(tiny_causal_lm), str(tmp_path)), tmp_path)
    for rank in (0, 1):
        for together, single in zip(torch.load(tmp_path / f"grads-{rank}.pt"), alone, strict=True):
            torch.testing.assert_close(together, single, rtol=1e-5, atol=1e-7)
        reduced = json.loads((tmp_path / f"metrics-{rank}.json").read_text())
        assert reduced == pytest.approx(metrics, rel=1e-5, abs=1e-6)


def _full_policy(path: str):
    """The whole model trains (no LoRA): the reference is a second, frozen copy of the base."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(0)  # the same moved policy in every process
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model.eval()


def _full_step(model, batches, load_reference):
    settings = {"reference": Reference(model, False, load_reference, seed=0), "dpo_beta": 0.5}

    def loss(m, batch):
        return loss_of(m, batch, TASK, settings, CPU)

    accumulate(model, batches, loss, CPU, TASK.target.weight)
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def _fsdp_worker(rank: int, rendezvous: str, cfg, out_dir: str) -> None:
    from raylane.train.loop import reference_model

    with gloo_group(rank, rendezvous):
        model = sharding.shard(_full_policy(cfg.model.name_or_path), CPU.device, None, cpu_offload=False)
        # The training loop's own reference: the base loaded again and sharded as the policy is.
        grads = _full_step(model, [_batches()[rank]], lambda: reference_model(cfg, TASK, [], CPU.device, CPU))
        assert all(isinstance(g, DTensor) for g in grads.values())  # sharded: each worker holds a part
        torch.save({name: g.full_tensor() for name, g in grads.items()}, os.path.join(out_dir, f"grads-{rank}.pt"))


def test_sharded_workers_against_a_frozen_reference_copy_reach_the_gradient_of_one_process(
    tiny_causal_lm, make_cfg, tmp_path
):
    """Full fine-tuning under FSDP2: the reference is a second copy of the base, sharded as the
    policy is, loaded on the first batch; two workers with 3 and 1 pairs equal one process."""
    from transformers import AutoModelForCausalLM

    path = str(tiny_causal_lm)
    cfg = make_cfg("task=preference", f"model.name_or_path={path}", "train.strategy=fsdp", "resources.num_workers=2")
    alone = _full_step(_full_policy(path), _batches(), lambda: AutoModelForCausalLM.from_pretrained(path))
    assert len(alone) == len(list(AutoModelForCausalLM.from_pretrained(path).parameters()))

    run_workers(_fsdp_worker, (cfg, str(tmp_path)), tmp_path)
    for rank in (0, 1):
        together = torch.load(tmp_path / f"grads-{rank}.pt")
        assert together.keys() == alone.keys()
        for name, single in alone.items():
            torch.testing.assert_close(together[name], single, rtol=1e-4, atol=1e-6, msg=name)
