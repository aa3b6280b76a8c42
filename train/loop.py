"""The training loop that runs on every Ray Train worker (`train_fn_per_worker`).

Nothing here builds a trainer or touches the driver: `train.driver` does that. Rank 0 alone
writes checkpoints and logs to MLflow; every rank calls `ray.train.report` once per epoch,
because report is a barrier.
"""

from __future__ import annotations

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
from raylane.metrics import confusion_matrix, summarize
from raylane.models import load_classifier, load_tokenizer
from raylane.tracking import RunRef
from raylane.train import checkpoint
from raylane.train.batches import PadCollate
from raylane.train.optim import Precision, accumulate, build_optimizer, build_scheduler, groups, optimizer_step


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


def _all_reduce(array: np.ndarray) -> np.ndarray:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return array
    tensor = torch.as_tensor(array, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.numpy()


def _epoch_metrics(loss_sum: float, cm: np.ndarray, label_names: list[str], prefix: str) -> dict[str, float]:
    """Sum every worker's loss and confusion matrix, then derive the metrics of the whole split."""
    n = len(label_names)
    totals = _all_reduce(np.concatenate([[loss_sum], cm.ravel()]).astype(np.float64))
    cm_all = totals[1:].reshape(n, n).round().astype(np.int64)
    count = max(int(cm_all.sum()), 1)
    summary = summarize(cm_all, label_names)
    metrics = {f"{prefix}loss": float(totals[0] / count)}
    for key in ("accuracy", "macro_f1", "weighted_f1"):
        metrics[f"{prefix}{key}"] = summary[key]
    if prefix == "val_":
        metrics.update({f"val_f1_{name}": row["f1"] for name, row in summary["per_class"].items()})
    return metrics


def evaluate(model, batches, device, num_labels: int, precision: Precision) -> tuple[float, np.ndarray]:
    model.eval()
    loss_sum, cm = 0.0, np.zeros((num_labels, num_labels), dtype=np.int64)
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            with precision.autocast():
                out = model(**batch)
            loss_sum += float(out.loss) * len(batch["labels"])
            cm += confusion_matrix(batch["labels"].cpu(), out.logits.argmax(-1).cpu(), num_labels)
    return loss_sum, cm


def train_fn_per_worker(config: dict[str, Any]) -> None:
    cfg: PipelineConfig = config["cfg"]
    label_names: list[str] = config["label_names"]
    mlflow_run: RunRef | None = config["mlflow_run"]
    tc = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    seed_everything(tc.seed)

    tokenizer = load_tokenizer(cfg.model.name_or_path)
    # Saved with the model, so inference truncates exactly where ingest did.
    tokenizer.model_max_length = config["max_length"]  # the dataset's, as ingest truncated it
    start_epoch, state = 0, None
    resume_from = ray.train.get_checkpoint()
    if resume_from:
        with resume_from.as_directory() as d:
            state = checkpoint.load_state(Path(d))
            model = load_classifier(str(Path(d) / checkpoint.MODEL_DIR), label_names)
        start_epoch = state["epoch"] + 1
    else:
        model = load_classifier(cfg.model.name_or_path, label_names)
    model = ray.train.torch.prepare_model(model)

    # The configured batch is global, per optimizer step: each of `world` workers takes its
    # share of it, in `grad_accum_steps` micro-batches.
    accum = tc.grad_accum_steps
    micro_batch = max(1, tc.batch_size // (world * accum))
    steps_per_epoch = math.ceil(config["train_rows"] / (micro_batch * world * accum))
    total_steps = steps_per_epoch * tc.epochs
    optimizer = build_optimizer(model, tc.lr, tc.weight_decay)
    scheduler = build_scheduler(optimizer, int(tc.warmup_ratio * total_steps), total_steps, tc.schedule)
    precision = Precision(device, tc.precision)
    stopper = EarlyStopping(tc.early_stopping_patience, tc.metric_mode)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        precision.scaler.load_state_dict(state.get("scaler", {}))
        stopper.load_state_dict(state.get("early_stopping", {}))
        checkpoint.set_rng_state(state["rng"])

    collate = PadCollate(pad_id=tokenizer.pad_token_id or 0)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    n = len(label_names)
    for epoch in range(start_epoch, tc.epochs):
        model.train()
        started, seen = time.time(), 0
        loss_sum, cm = 0.0, np.zeros((n, n), dtype=np.int64)
        batches = train_shard.iter_torch_batches(
            batch_size=micro_batch,
            collate_fn=collate,
            local_shuffle_buffer_size=micro_batch * accum * 8,
            local_shuffle_seed=tc.seed + epoch,
        )
        for group in groups(({k: v.to(device) for k, v in b.items()} for b in batches), accum):
            outputs = accumulate(model, group, precision)
            optimizer_step(model, optimizer, scheduler, precision, tc.max_grad_norm)
            for batch, out in zip(group, outputs):
                loss_sum += float(out.loss.detach()) * len(batch["labels"])
                cm += confusion_matrix(batch["labels"].cpu(), out.logits.detach().argmax(-1).cpu(), n)
                seen += len(batch["labels"])
        epoch_time = time.time() - started
        metrics = {"epoch": epoch + 1, **_epoch_metrics(loss_sum, cm, label_names, "train_")}
        val_batches = val_shard.iter_torch_batches(batch_size=micro_batch * 2, collate_fn=collate)
        metrics.update(_epoch_metrics(*evaluate(model, val_batches, device, n, precision), label_names, "val_"))
        metrics.update(
            {
                "epoch_time_s": epoch_time,
                "samples_per_s": float(_all_reduce(np.array([seen]))[0]) / epoch_time,
                "lr": scheduler.get_last_lr()[0],
            }
        )
        # Counted before the checkpoint is written, so a run resumed from it counts this epoch.
        # Every rank sees the same all-reduced metrics, so all of them stop at the same epoch
        # (ray.train.report is a barrier: a rank that went on alone would hang).
        stop = stopper.should_stop(metrics[tc.metric])
        ckpt_dir = Path(tempfile.mkdtemp(prefix="raylane-ckpt-")) if rank == 0 else None
        if ckpt_dir:
            unwrapped = model.module if hasattr(model, "module") else model
            checkpoint.save(
                ckpt_dir,
                unwrapped,
                tokenizer,
                optimizer,
                scheduler,
                epoch,
                scaler=precision.scaler,
                early_stopping=stopper.state_dict(),
            )
            if mlflow_run:
                mlflow_run.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch + 1)
            print(_progress_line(metrics, tc.epochs), flush=True)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)
        # Ray has copied the checkpoint to storage by now; in local mode (no workers) there is
        # no storage and the returned checkpoint is this directory, so it must stay.
        if ckpt_dir and not config["local_mode"]:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        if stop:
            if rank == 0:
                print(f"early stopping: no better {tc.metric} for {tc.early_stopping_patience} epoch(s)", flush=True)
            break


def _progress_line(m: dict[str, float], epochs: int) -> str:
    return (
        f"epoch {m['epoch']}/{epochs}  train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}  "
        f"val_acc {m['val_accuracy']:.3f}  val_macro_f1 {m['val_macro_f1']:.3f}  "
        f"{m['samples_per_s']:.1f} samples/s  {m['epoch_time_s']:.1f}s"
    )
