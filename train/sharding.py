"""How the model is spread over the workers: DDP keeps a whole copy on each and all-reduces the
gradients; FSDP2 shards parameters, gradients and optimizer state, so a model that one device
cannot hold still trains. Both run on GPUs (NCCL) and CPUs (gloo).

Ray's `prepare_model(parallel_strategy="fsdp")` wraps FSDP1 and refuses CPU workers, so FSDP2's
`fully_shard` is applied here directly, as Ray's FSDP2 tutorial does.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one by one (each is gathered only while it computes).

    Hugging Face names them in `_no_split_modules` (LlamaDecoderLayer, ...); models that do not
    (BERT in transformers 5, ResNet) keep them in the first ModuleList (encoder.layer, stages)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if blocks:
        return blocks
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module):
            return list(module)
    return []


def shard(model: nn.Module, device: torch.device, dtype: torch.dtype | None, cpu_offload: bool) -> nn.Module:
    """FSDP2 over the default process group: each transformer block, then the root (the
    embeddings and the head). On CUDA the parameters are gathered in `dtype` and gradients
    reduced in fp32; on CPU they stay fp32 and the loop's autocast computes in bf16 (gloo's
    bf16 collectives are not worth the risk for the few MB they would save)."""
    options: dict = {}
    if dtype is not None and device.type == "cuda":
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    if cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy()
    else:
        model.to(device)
    for block in transformer_blocks(model):
        fully_shard(block, **options)
    fully_shard(model, **options)
    if dist.get_backend() == "gloo":
        # gloo's AVG reduce-scatter has returned wrong gradients (pytorch/pytorch#162338): sum,
        # and let FSDP divide by the world size itself. tests/integration/train/test_fsdp.py
        # checks the result against one process on the same global batch.
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_force_sum_reduction_for_comms(True)
    return model


def prepare(model: nn.Module, strategy: str, device: torch.device, dtype: torch.dtype | None, cpu_offload: bool):
    if strategy == "fsdp":
        return shard(model, device, dtype, cpu_offload)
    import ray.train.torch

    return ray.train.torch.prepare_model(model)


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def unwrapped(model: nn.Module) -> nn.Module:
    """The model itself: DDP wraps it in `.module`; FSDP2 shards it in place."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def gradient_sync_off(model: nn.Module):
    """Backward passes that keep their gradients local (the micro-batches of an optimizer step
    but the last): DDP's `no_sync`, FSDP2's `set_requires_gradient_sync(False)`."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield
