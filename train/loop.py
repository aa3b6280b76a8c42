"""The training loop that runs on every Ray Train worker (`train_fn_per_worker`).

Nothing here builds a trainer or touches the driver: `train.driver` does that. What varies by
task (the model, the batches, the loss, the metrics) comes from the task (`raylane.tasks`). Rank
0 alone writes checkpoints, prints and logs to MLflow; every rank calls `ray.train.report` once
per epoch, because report is a barrier.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from raylane.config import PipelineConfig
from raylane.console import quiet_worker, say
from raylane.distill import keep_layers
from raylane.progress import StepProgress
from raylane.tasks import Task, get_task
from raylane.tasks.collate import rows_in
from raylane.tracking import RunRef, system_metrics
from raylane.train import checkpoint, lora, sharding
from raylane.train.batching import epoch_batches
from raylane.train.lora import parameter_counts
from raylane.train.memory import peak_memory_mb
from raylane.train.optim import (
    Precision,
    accumulate,
    build_optimizer,
    build_scheduler,
    groups,
    loss_of,
    optimizer_step,
)
from raylane.train.records import EpochRecord, all_reduce, epoch_record
from raylane.train.reference import Reference


class EarlyStopping:
    """Counts epochs without improvement of the ranking metric; kept in checkpoints so a resumed
    run keeps counting."""

    def __init__(self, patience: int, mode: str):
        self.patience, self.mode = patience, mode
        self.best: float | None = None
        self.bad_epochs = 0

    def should_stop(self, value: float) -> bool:
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = state.get("best"), state.get("bad_epochs", 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(model, batches, device, task: Task, settings: dict[str, Any], precision: Precision) -> EpochRecord:
    model.eval()
    record = epoch_record(task)
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, logits = loss_of(model, batch, task, settings, precision)
            record.add(float(loss), logits, batch)
    return record


def build_model(cfg: PipelineConfig, task: Task, labels: list[str], resume_dir: Path | None):
    """The model to train, with LoRA adapters if configured, its weights restored from the
    checkpoint being resumed. A whole checkpoint (DDP, no LoRA) loads from its `model/`; LoRA
    rebuilds the frozen base from model.name_or_path and restores the adapter (DDP) or the
    shards (FSDP) on top; FSDP's shards are restored by the caller once the model is sharded."""
    tc = cfg.train
    if resume_dir is not None and tc.peft == "none" and tc.strategy == "ddp":
        model = task.inputs.load_model(str(resume_dir / checkpoint.MODEL_DIR), labels, task.target)
    else:
        model = task.inputs.load_model(cfg.model.name_or_path, labels, task.target, cfg.model.init)
        if tc.distill.student_layers:  # a student cut from its teacher (model.name_or_path, pinned so)
            model = keep_layers(model, tc.distill.student_layers)
    if tc.gradient_checkpointing:
        # Non-reentrant: works with frozen inputs (LoRA) and with FSDP.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if tc.peft == "lora":
        model = lora.apply(model, tc.lora)
        if resume_dir is not None and tc.strategy == "ddp":
            lora.load_adapter(model, resume_dir / checkpoint.MODEL_DIR)
    return model


def reference_model(cfg: PipelineConfig, task: Task, labels: list[str], device, precision: Precision):
    """A frozen copy of the base model, placed as the policy is (`raylane.train.reference`)."""
    tc = cfg.train
    base = task.inputs.load_model(cfg.model.name_or_path, labels, task.target, cfg.model.init)
    if tc.strategy == "fsdp":
        return sharding.shard(base, device, precision.dtype, tc.cpu_offload)
    return base.to(device)


def train_fn_per_worker(config: dict[str, Any]) -> None:
    quiet_worker()
    cfg: PipelineConfig = config["cfg"]
    labels: list[str] = config["label_names"]
    extras: dict[str, Any] = config["extras"]
    mlflow_run: RunRef | None = config["mlflow_run"]
    task = get_task(cfg.task)
    tc = cfg.train
    settings = {
        "loss": tc.loss,
        "distill_alpha": tc.distill.alpha,
        "distill_temperature": tc.distill.temperature,
        "dpo_beta": tc.dpo.beta,
    }
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    seed_everything(tc.seed)

    processor = task.inputs.load_processor(cfg.model.name_or_path)
    if hasattr(processor, "model_max_length"):
        processor.model_max_length = config["max_length"]  # saved with the model: inference truncates where ingest did
    precision = Precision(device, tc.precision)
    if tc.strategy == "fsdp" and precision.dtype is torch.float16:
        # `auto` on a GPU without bf16: fp16 needs a loss scaler that knows about shards.
        precision = Precision(device, "fp32")
        if rank == 0:
            say("fsdp: this GPU has no bf16 and fp16 needs a sharded loss scaler: training in fp32")
    lora_on = tc.peft == "lora"
    start_epoch, state = 0, None
    resume_from = ray.train.get_checkpoint()
    with resume_from.as_directory() if resume_from else contextlib.nullcontext() as resume_dir:
        resume_dir = Path(resume_dir) if resume_dir else None
        model = build_model(cfg, task, labels, resume_dir)
        trainable, total = parameter_counts(model)
        model = sharding.prepare(model, tc.strategy, device, precision.dtype, tc.cpu_offload)
        sharded = sharding.is_sharded(model)

        # The configured batch is global, per optimizer step: each of `world` workers takes its
        # share of it, in `grad_accum_steps` micro-batches.
        accum = tc.grad_accum_steps
        micro_batch = max(1, tc.batch_size // (world * accum))
        steps_per_epoch = math.ceil(config["train_rows"] / (micro_batch * world * accum))
        total_steps = steps_per_epoch * tc.epochs
        optimizer = build_optimizer(model, tc.lr, tc.weight_decay)
        scheduler = build_scheduler(optimizer, int(tc.warmup_ratio * total_steps), total_steps, tc.schedule)
        stopper = EarlyStopping(tc.early_stopping_patience, tc.metric_mode)
        if resume_dir:
            state = checkpoint.load_state(resume_dir)
            start_epoch = state["epoch"] + 1
            if sharded:
                checkpoint.load_shards(resume_dir, model, optimizer, lora_on)
            else:
                optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            precision.scaler.load_state_dict(state.get("scaler", {}))
            stopper.load_state_dict(state.get("early_stopping", {}))
            checkpoint.set_rng_state(state["rng"])
    settings["reference"] = Reference(
        model, lora_on, lambda: reference_model(cfg, task, labels, device, precision), tc.seed
    )
    if rank == 0 and mlflow_run and resume_dir is None:
        mlflow_run.log_params({"trainable_params": trainable, "total_params": total})
        mlflow_run.log_metrics({"trainable_share": trainable / max(total, 1)}, step=0)

    pack_width = cfg.data.max_length if tc.packing else 0
    collate = task.inputs.collate(processor, task.target, len(labels), extras, pack_width)
    group_by_length = tc.group_by_length and "length" in task.inputs.columns  # images have no length
    label = config.get("label", "")  # a sweep's trial id, at the start of each console line
    if rank == 0 and lora_on and resume_dir is None:
        share = f"{trainable:,} of {total:,} parameters train ({trainable / total:.2%})"
        say(f"{label + '  ' if label else ''}LoRA: {share}")
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    progress = StepProgress(
        steps_per_epoch,
        tc.epochs,
        enabled=rank == 0,
        mlflow_run=mlflow_run,
        log_every_steps=tc.log_every_steps,
        label=label,
    )
    # One sampler per node (its local rank 0): the run's System metrics tab shows each node's
    # CPU, memory and GPUs, named by node when the run spans several.
    nodes = world // max(1, ctx.get_local_world_size())
    sampler = system_metrics(
        mlflow_run if ctx.get_local_rank() == 0 else None,
        cfg.tracking.system_metrics_s,
        node=f"node{ctx.get_node_rank()}" if nodes > 1 else None,
        resume=resume_from is not None,
    )
    with sampler:
        for epoch in range(start_epoch, tc.epochs):
            model.train()
            started = time.time()
            record = epoch_record(task)
            progress.start_epoch(epoch)
            # Shuffled over 8 optimizer steps' rows, as before batches could be grouped by length.
            batches = epoch_batches(
                train_shard,
                micro_batch,
                collate,
                tc.seed + epoch,
                group_by_length,
                shuffle_rows=micro_batch * accum * 8,
            )
            for group in groups(({k: v.to(device) for k, v in b.items()} for b in batches), accum):
                results = accumulate(
                    model,
                    group,
                    lambda m, b: loss_of(m, b, task, settings, precision),
                    precision,
                    task.target.weight,
                )
                optimizer_step(model, optimizer, scheduler, precision, tc.max_grad_norm)
                rows = sum(rows_in(b) for b in group)
                units = sum(task.target.weight(b["labels"]) for b in group)
                loss_sum = sum(float(loss.detach()) for loss, _ in results)
                for batch, (loss, logits) in zip(group, results):
                    record.add(float(loss.detach()), logits, batch)
                progress.step(rows * world, loss_sum / max(units, 1), scheduler.get_last_lr()[0])
            epoch_time = time.time() - started
            metrics = {"epoch": epoch + 1, **record.metrics(labels, extras, "train_")}
            val_batches = val_shard.iter_torch_batches(batch_size=micro_batch * 2, collate_fn=collate)
            metrics.update(
                evaluate(model, val_batches, device, task, settings, precision).metrics(labels, extras, "val_")
            )
            metrics.update(
                {
                    "peak_memory_mb": float(all_reduce(np.array([peak_memory_mb(device)]), dist.ReduceOp.MAX)[0]),
                    "epoch_time_s": epoch_time,
                    "samples_per_s": float(all_reduce(np.array([record.rows]))[0]) / epoch_time,
                    **task.target.rates(float(all_reduce(np.array([record.units]))[0]), epoch_time),
                    "lr": scheduler.get_last_lr()[0],
                }
            )
            # Counted before the checkpoint is written, so a run resumed from it counts this epoch.
            # Every rank sees the same gathered metrics, so all of them stop at the same epoch
            # (ray.train.report is a barrier: a rank that went on alone would hang).
            stop = stopper.should_stop(metrics[tc.metric])
            # Under FSDP every rank writes its shard (and all gather the whole model for rank 0);
            # otherwise rank 0 alone writes.
            ckpt_dir = Path(tempfile.mkdtemp(prefix="raylane-ckpt-")) if rank == 0 or sharded else None
            weights = checkpoint.gathered_weights(model, lora_on) if sharded else None
            if sharded:
                checkpoint.save_shards(ckpt_dir, model, optimizer, lora_on)
            if rank == 0:
                checkpoint.save(
                    ckpt_dir,
                    sharding.unwrapped(model),
                    processor,
                    None if sharded else optimizer,
                    scheduler,
                    epoch,
                    scaler=precision.scaler,
                    early_stopping=stopper.state_dict(),
                    state_dict=weights,
                )
                if mlflow_run:
                    mlflow_run.log_metrics(
                        {k: v for k, v in metrics.items() if k != "epoch"}, step=progress.global_step
                    )
                say(epoch_line(metrics, tc.epochs, tc.metric, label))
            # `early_stopped` tells a sweep's console which stop it was: this run's own, or the scheduler's.
            reported = {**metrics, "early_stopped": float(stop)}
            ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)
            # Ray has copied the checkpoint to storage by now; in local mode (no workers) there is
            # no storage and the returned checkpoint is this directory, so it must stay.
            if ckpt_dir and not config["local_mode"]:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
            if stop:
                if rank == 0:
                    say(f"early stopping: no better {tc.metric} for {tc.early_stopping_patience} epoch(s)")
                break


def epoch_line(m: dict[str, float], epochs: int, metric: str, label: str = "") -> str:
    prefix = f"{label}  " if label else ""
    ranked = f"  {metric} {m[metric]:.4f}" if metric != "val_loss" else ""
    return (
        f"{prefix}epoch {m['epoch']}/{epochs}  train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}"
        f"{ranked}  {m['samples_per_s']:.1f} samples/s  {m['epoch_time_s']:.1f}s"
    )
