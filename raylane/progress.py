"""Progress inside an epoch, so minutes of training are never minutes of silence.

Rank 0 prints a line every `every_s` seconds (plain lines, readable in a job's log as in a
terminal): the step, samples/s over the last interval, the running loss, the learning rate and
the epoch's ETA. Every `log_every_steps` optimizer steps the loss and learning rate also go to
MLflow, on the same step axis as the epoch metrics.
"""

from __future__ import annotations

import time

from raylane.console import say


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class StepProgress:
    def __init__(
        self,
        steps_per_epoch: int,
        epochs: int,
        enabled: bool = True,
        mlflow_run=None,
        log_every_steps: int = 10,
        every_s: float = 10.0,
        clock=time.monotonic,
        out=say,
        label: str = "",
    ):
        self.steps_per_epoch, self.epochs = max(1, steps_per_epoch), epochs
        self.prefix = f"{label}  " if label else "  "  # a sweep's trials print side by side
        self.enabled, self.mlflow_run, self.log_every_steps = enabled, mlflow_run, log_every_steps
        self.every_s, self.clock, self.out = every_s, clock, out
        self.global_step = 0
        self.epoch = 0
        self._epoch_step = 0
        self._loss_sum = self._loss_steps = 0.0

    def start_epoch(self, epoch: int) -> None:
        """`epoch` counts from 0; a resumed run starts past the steps of the epochs it skips."""
        self.epoch, self._epoch_step = epoch, 0
        self.global_step = max(self.global_step, epoch * self.steps_per_epoch)
        self._started = self._last = self.clock()
        self._samples_since = 0

    def step(self, samples: int, loss: float, lr: float) -> None:
        """One optimizer step of `samples` rows (all workers) at mean loss `loss`."""
        self.global_step += 1
        self._epoch_step += 1
        self._samples_since += samples
        self._loss_sum += loss
        self._loss_steps += 1
        if not self.enabled:
            return
        if self.mlflow_run is not None and self.log_every_steps and self.global_step % self.log_every_steps == 0:
            self.mlflow_run.log_metrics(
                {"step_loss": self._loss_sum / self._loss_steps, "step_lr": lr}, step=self.global_step
            )
            self._loss_sum = self._loss_steps = 0.0
        now = self.clock()
        if now - self._last >= self.every_s:
            rate = self._samples_since / max(now - self._last, 1e-9)
            per_step = (now - self._started) / self._epoch_step
            left = per_step * (self.steps_per_epoch - self._epoch_step)
            self.out(
                f"{self.prefix}epoch {self.epoch + 1}/{self.epochs}  step {self._epoch_step}/{self.steps_per_epoch}  "
                f"loss {loss:.4f}  lr {lr:.2e}  {rate:.1f} samples/s  ETA {_duration(left)}"
            )
            self._last, self._samples_since = now, 0


class RowProgress:
    """Rows done of a known total, for work that is rows rather than steps (generating for a
    split, or for a file): a line every `every_s` seconds with rows done, rows/s since the start
    and the ETA, and a last line when all are done."""

    def __init__(self, total: int, what: str, every_s: float = 10.0, clock=time.monotonic, out=say):
        self.total, self.what, self.every_s, self.clock, self.out = total, what, every_s, clock, out
        self.done = 0
        self._started = self._last = clock()

    def add(self, rows: int) -> None:
        self.done += rows
        now = self.clock()
        if now - self._last < self.every_s and self.done < self.total:
            return
        self._last = now
        rate = self.done / max(now - self._started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        tail = f"ETA {_duration(left)}" if self.done < self.total else f"done in {_duration(now - self._started)}"
        self.out(f"  {self.what}  rows {self.done}/{self.total}  {rate:.2f} rows/s  {tail}")
