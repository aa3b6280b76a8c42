"""FSDP2 on 2 real gloo workers (Ray Train) computes what one process computes on the same global
batch, for full fine-tuning and for LoRA; its sharded checkpoint restores model and optimizer.

gloo's AVG reduction has been wrong before (pytorch/pytorch#162338), and sharding, gradient
accumulation and clipping each change how gradients are summed: the equality is the proof."""

import sys
from pathlib import Path

import ray.cloudpickle
import torch

from raylane.config.schema import LoraSettings

GLOBAL_ROWS, MICRO_BATCHES, STEPS, SEQ, LR = 8, 2, 3, 12, 1e-3


def _model(tiny_model: str, lora: bool):
    from transformers import AutoModelForSequenceClassification

    from raylane.train.lora import apply

    torch.manual_seed(0)  # the same new head in every process
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    return apply(model, LoraSettings(r=4, alpha=8.0, dropout=0.0)) if lora else model


def _global_batch(step: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(1000, 2000, (GLOBAL_ROWS, SEQ), generator=generator)
    mask = torch.ones_like(ids)
    mask[::2, SEQ // 2 :] = 0  # half the rows padded: padding must not change the result either
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(GLOBAL_ROWS) % 3}


def _train(model, rows: slice, device) -> tuple[torch.optim.Optimizer, dict[str, torch.Tensor]]:
    """STEPS optimizer steps of raylane's own step code on `rows` of each global batch; returns the
    optimizer and the first step's gradients, whole (gathering them is collective under FSDP).

    The gradients are compared too: AdamW after clipping barely notices a gradient scaled by the
    world size (a sum where a mean belongs), so equal weights alone would not prove the reduction."""
    from raylane.train.optim import Precision, accumulate, build_optimizer, build_scheduler, optimizer_step

    precision = Precision(device, "fp32")
    optimizer = build_optimizer(model, LR, 0.01)
    scheduler = build_scheduler(optimizer, 1, STEPS, "linear")

    def loss_fn(m, batch):
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"), logits

    for step in range(STEPS):
        batch = {k: v[rows] for k, v in _global_batch(step).items()}
        size = len(batch["labels"]) // MICRO_BATCHES
        micro = [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(MICRO_BATCHES)]
        accumulate(model, micro, loss_fn, precision)
        if step == 0:
            grads = {n: _whole(p.grad) for n, p in model.named_parameters() if p.grad is not None}
        optimizer_step(model, optimizer, scheduler, precision, max_grad_norm=0.5)
    return optimizer, grads


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor.detach().clone()


def _fsdp_worker(config):
    import ray.train
    import torch.distributed as dist

    from raylane.train import checkpoint, sharding

    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    out = Path(config["out"])
    for lora in (False, True):
        model = sharding.prepare(_model(config["tiny_model"], lora), "fsdp", torch.device("cpu"), None, False)
        share = GLOBAL_ROWS // world
        optimizer, grads = _train(model, slice(rank * share, (rank + 1) * share), torch.device("cpu"))
        weights = checkpoint.gathered_weights(model, lora=False)  # all of them, to compare
        if rank == 0:
            torch.save({"weights": weights, "grads": grads}, out / f"fsdp-lora{int(lora)}.pt")

        # The sharded checkpoint: into a fresh model and optimizer, then compared rank by rank.
        shards = out / f"ckpt-lora{int(lora)}"
        checkpoint.save_shards(shards, model, optimizer, lora)
        dist.barrier()
        fresh = sharding.prepare(_model(config["tiny_model"], lora), "fsdp", torch.device("cpu"), None, False)
        from raylane.train.optim import build_optimizer

        fresh_optimizer = build_optimizer(fresh, LR, 0.01)
        checkpoint.load_shards(shards, fresh, fresh_optimizer, lora)
        same_params = all(
            torch.equal(a.to_local(), b.to_local()) for a, b in zip(model.parameters(), fresh.parameters())
        )
        states = [
            (optimizer.state[a], fresh_optimizer.state[b]) for a, b in zip(model.parameters(), fresh.parameters())
        ]
        same_optimizer = (
            all(set(s) == set(f) and all(torch.equal(_local(s[k]), _local(f[k])) for k in s) for s, f in states)
            and sum(bool(s) for s, _ in states) > 0
        )
        (out / f"restored-lora{int(lora)}-rank{rank}.txt").write_text(f"{same_params} {same_optimizer}")
        ray.train.report({"lora": int(lora)})


def _local(value):
    return value.to_local() if hasattr(value, "to_local") else torch.as_tensor(value)


def test_fsdp_on_two_gloo_workers_matches_one_process(ray_session, tiny_model, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/
    TorchTrainer(
        _fsdp_worker,
        train_loop_config={"out": str(tmp_path), "tiny_model": str(tiny_model)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(storage_path=str(tmp_path / "storage")),
    ).fit()

    for lora in (False, True):
        reference = _model(str(tiny_model), lora)
        before = {k: v.clone() for k, v in reference.state_dict().items()}
        _, expected_grads = _train(reference, slice(0, GLOBAL_ROWS), torch.device("cpu"))
        expected = reference.state_dict()
        saved = torch.load(tmp_path / f"fsdp-lora{int(lora)}.pt")
        sharded, grads = saved["weights"], saved["grads"]
        assert set(grads) == set(expected_grads) and grads
        for name, grad in expected_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-7, msg=f"lora={lora}: gradient of {name}")
        assert set(sharded) == set(expected)
        worst = max((sharded[k] - expected[k]).abs().max().item() for k in expected)
        assert worst < 1e-5, f"lora={lora}: FSDP weights differ from one process by {worst}"
        moved = [k for k in expected if not torch.equal(expected[k], before[k])]
        assert moved, "training changed nothing: the comparison would prove nothing"
        if lora:  # the base is frozen, bit for bit; adapters and head trained
            assert all("lora_" in k or "modules_to_save" in k for k in moved), moved
            assert any("lora_B" in k for k in moved)
            assert all(torch.equal(sharded[k], before[k]) for k in expected if k not in moved)
        for rank in (0, 1):
            restored = (tmp_path / f"restored-lora{int(lora)}-rank{rank}.txt").read_text()
            assert restored == "True True", f"lora={lora} rank {rank}: params, optimizer restored = {restored}"
