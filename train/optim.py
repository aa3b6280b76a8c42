"""Optimizer, learning-rate schedule and numeric precision: the pieces of a training step that
do not depend on Ray, so unit tests drive them directly."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from raylane.tasks.collate import NOT_MODEL_INPUTS
from raylane.train.records import all_reduce
from raylane.train.sharding import gradient_sync_off

if TYPE_CHECKING:
    from raylane.tasks import Task


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with no decay on biases and LayerNorm weights (decaying them only hurts)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(step: int, warmup: int, total: int, schedule: str = "linear") -> float:
    """Linear warmup to the peak, then linear or cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def build_scheduler(optimizer, warmup: int, total: int, schedule: str):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, warmup=warmup, total=total, schedule=schedule)
    )


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bf16 natively (x86 AVX512-BF16 or AMX, Arm's BF16 extension).

    Without them oneDNN emulates bf16 and autocast is slower than fp32, so `auto` must not assume
    it: it reads the CPU's flags (Linux's /proc/cpuinfo; elsewhere no flags, so fp32)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


class Precision:
    """Autocast and loss scaling for one device. `auto`: bf16 where the GPU supports it (fp32's
    exponent range, so no scaler), fp16 with a GradScaler on other GPUs; on CPU bf16 autocast
    where the CPU has native bf16 (measured 1.6-1.8x the fp32 step of the default model, same
    accuracy: `python -m bench train_cpu_speed`), else fp32. fp16 is GPU-only."""

    def __init__(self, device: torch.device, wanted: str = "auto"):
        self.device = device
        if device.type == "cuda":
            if wanted == "fp32":
                self.dtype = None
            elif wanted == "bf16" or (wanted == "auto" and torch.cuda.is_bf16_supported()):
                self.dtype = torch.bfloat16
            else:
                self.dtype = torch.float16
        elif wanted == "bf16" or (wanted == "auto" and cpu_has_native_bf16()):
            self.dtype = torch.bfloat16
        else:
            self.dtype = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype is torch.float16)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def loss_of(model, batch: dict[str, torch.Tensor], task: Task, settings: dict[str, Any], precision: Precision):
    """(summed loss over the batch's rows, what the epoch record keeps: the logits, as a rule): the
    task's loss on the model's outputs (`Target.batch_loss`). A batch
    that carries a teacher's soft targets (`train.distill`) mixes in the soft loss against them:
    alpha x soft + (1 - alpha) x plain."""
    inputs = {k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS}

    def forward(other=None):
        with precision.autocast():
            return (model if other is None else other)(**inputs, **task.engine.forward_options).logits

    loss, logits = task.target.batch_loss(forward, batch, settings)
    if "teacher" in batch:
        alpha, temperature = settings["distill_alpha"], settings["distill_temperature"]
        loss = alpha * task.target.soft_loss(logits, batch["teacher"], temperature) + (1 - alpha) * loss
    return loss, logits


def accumulate(model, micro_batches: list[dict[str, torch.Tensor]], loss_fn, precision: Precision, weigh=len):
    """Forward and backward over the micro-batches of one optimizer step. `loss_fn(model, batch)`
    gives (the loss summed over the batch's rows, logits); each is divided by the step's rows
    (`weigh(labels)`: or its answer tokens, for a language model) counted over every worker, so
    the gradient is that of the mean over all of them, however they are split between micro-batches
    and workers. Only the last backward reduces across workers (DDP's all-reduce, FSDP's
    reduce-scatter). Returns each micro-batch's (summed loss, logits), for metrics."""
    rows = max(1.0, step_units(sum(weigh(b["labels"]) for b in micro_batches)))
    results = []
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last else gradient_sync_off(model)
        with sync:
            loss_sum, logits = loss_fn(model, batch)
            precision.scaler.scale(loss_sum / rows).backward()
        results.append((loss_sum, logits))
    return results


def step_units(local: float) -> float:
    """What one worker divides its summed loss by so that the gradient the workers reduce is the
    mean over the step's rows (or answer tokens) on all of them: DDP and FSDP average the workers'
    gradients, so each divides by the global count over the world size. Workers whose batches hold
    unequal answer tokens then weigh each token alike, as one process would; dividing by the local
    count would weigh a token on a worker with few of them more."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return float(all_reduce(np.array([float(local)]))[0]) / world


def optimizer_step(model, optimizer, scheduler, precision: Precision, max_grad_norm: float) -> None:
    if max_grad_norm > 0:
        precision.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def groups(items: Iterable, size: int):
    """Consecutive lists of `size` items (the last may be shorter)."""
    group: list = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
