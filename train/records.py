"""What a worker records of an epoch (or a validation pass), by the task's engine, and the
metrics of the whole split once every worker's record is combined.

Both engines sum the loss and what it is a sum over (`Target.weight`: rows, or a language model's
answer tokens), so means are exact over any split of rows between workers. A scoring model's
record also keeps the logits and true labels of its rows, for the task's metrics of the whole
split once gathered; a generating model's keeps none (its logits are far too big to gather):
its metrics follow from the loss, and its generations are judged at evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from raylane.tasks import Task
from raylane.tasks.collate import rows_in


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(array: np.ndarray, op=dist.ReduceOp.SUM) -> np.ndarray:
    if not _distributed():
        return array
    tensor = torch.as_tensor(array, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=op)
    return tensor.cpu().numpy()


def _collective_device() -> torch.device:
    """NCCL (Ray Train's backend on GPUs) reduces only tensors on the GPU; gloo those on the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather(array: np.ndarray) -> np.ndarray:
    """Every worker's rows of `array`, concatenated (rank order), on every worker."""
    if not _distributed():
        return array
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


class EpochRecord:
    """The summed loss of one worker's rows and what it is a sum over; the loss's metrics."""

    def __init__(self, task: Task):
        self.task = task
        self.loss_sum, self.rows, self.units = 0.0, 0, 0
        self.tallies = dict.fromkeys(task.target.tallied, 0.0)

    def add(self, loss_sum: float, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.loss_sum += loss_sum
        self.rows += rows_in(batch)
        self.units += self.task.target.weight(batch["labels"])
        for name, value in self.task.target.tally(logits).items():
            self.tallies[name] += value

    def mean_loss(self) -> float:
        """Over every worker's rows."""
        loss_sum, units = all_reduce(np.array([self.loss_sum, self.units], dtype=np.float64))
        return float(loss_sum / max(units, 1))

    def per_row(self) -> dict[str, float]:
        """The target's tallies (`Target.tally`) over every worker's rows, per row. Every worker
        tallies the same names (`Target.tallied`, whatever its rows), so the reduction lines up."""
        if not self.tallies:
            return {}
        names = sorted(self.tallies)
        sums = all_reduce(np.array([self.rows, *(self.tallies[n] for n in names)], dtype=np.float64))
        return {name: float(value / max(sums[0], 1)) for name, value in zip(names, sums[1:])}

    def metrics(self, labels: list[str], extras: dict[str, Any], prefix: str) -> dict[str, float]:
        mean_loss = self.mean_loss()
        return {
            f"{prefix}loss": mean_loss,
            **{f"{prefix}{k}": v for k, v in self.task.target.loss_metrics(mean_loss).items()},
            **{f"{prefix}{k}": v for k, v in self.per_row().items()},
        }


class OutputsRecord(EpochRecord):
    """A scoring model's record: the loss, and the logits and true labels of its rows."""

    def __init__(self, task: Task):
        super().__init__(task)
        self.logits: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def add(self, loss_sum: float, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        super().add(loss_sum, logits, batch)
        self.logits.append(logits.detach().float().cpu().numpy())
        self.labels.append(batch["labels"].detach().cpu().numpy())

    def metrics(self, labels: list[str], extras: dict[str, Any], prefix: str) -> dict[str, float]:
        """Loss and the task's metrics over every worker's rows."""
        mean_loss = self.mean_loss()
        logits = gather(np.concatenate(self.logits) if self.logits else np.zeros((0, max(1, len(labels)))))
        truth = gather(np.concatenate(self.labels) if self.labels else np.zeros((0,)))
        target = self.task.target
        scored = target.score(target.truth(truth, extras), target.outputs(logits, extras), labels, extras)
        metrics = {f"{prefix}loss": mean_loss}
        metrics.update({f"{prefix}{k}": v for k, v in scored["metrics"].items()})
        if prefix == "val_":
            metrics.update({f"val_f1_{name}": row["f1"] for name, row in scored["per_class"].items()})
        return metrics


RECORDS = {"scoring": OutputsRecord, "generating": EpochRecord}


def epoch_record(task: Task) -> EpochRecord:
    return RECORDS[task.engine.name](task)
