"""A training worker process dies mid-epoch: the run resumes from its latest checkpoint and ends
with all its epochs, having lost at most the epoch in flight."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import psutil
import pytest
from mlflow import MlflowClient

from tests.paths import REPO_ROOT


def _train_workers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if "RayTrainWorker" in title:
            found.append(proc)
    return found


def _wait_for_checkpoint(out, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not list(out.glob("checkpoints/**/train_state.pt")):
        if time.time() > deadline:
            raise TimeoutError("no checkpoint reached storage")
        time.sleep(0.2)


@pytest.mark.parametrize(
    "setup",
    [
        ["resources.num_workers=1"],
        # Sharded: two workers, each writing and restoring its own shard of model and optimizer.
        ["resources.num_workers=2", "train.strategy=fsdp"],
        # LoRA: the frozen base comes back from model.name_or_path, the adapter from the checkpoint.
        # Its steps are quicker, so batches of 2 keep epoch 2 in flight when the kill comes: Ray
        # Train registers reported checkpoints a moment later, and a kill after a whole unregistered
        # epoch resumes from the one before (seen once at batch 4 with 3 epochs: 2 and 3 ran twice).
        ["resources.num_workers=1", "train.peft=lora", "train.batch_size=2"],
    ],
    ids=["ddp", "fsdp", "lora"],
)
def test_killed_worker_resumes_from_its_checkpoint(smoke_dataset, tiny_model, tmp_path, setup, cli_env):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "raylane",
        "train",
        "--config",
        "configs/smoke.yaml",
        "--dataset",
        smoke_dataset.uri,
        f"model.name_or_path={tiny_model}",
        f"output_dir={out}",
        "train.epochs=2",  # killed in epoch 2: resumed from epoch 1, finished once more
        "train.batch_size=4",
        "train.max_failures=1",
        "train.checkpoints_to_keep=3",
        *setup,
    ]
    # On the session's Ray (the workers it kills are real processes there), with its own MLflow
    # store under `out`, whatever other tests exported.
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    killed: list[int] = []

    def watch() -> None:
        for line in proc.stdout:
            lines.append(line)
            if not killed and "epoch 1/2  train_loss" in line:
                # Epoch 1 is done (the loop prints its line, then reports the checkpoint); once
                # the checkpoint is on storage, epoch 2 (about 10 s on the tiny model at batch 4)
                # is under way when the worker dies.
                _wait_for_checkpoint(out)
                time.sleep(3)
                workers = _train_workers()
                for worker in workers:
                    os.kill(worker.pid, signal.SIGKILL)
                killed.extend(w.pid for w in workers)

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    code = proc.wait(timeout=600)
    reader.join(timeout=10)
    log = "".join(lines)
    assert code == 0, log[-4000:]
    assert killed, "no training worker process was found to kill:\n" + log[-3000:]
    assert all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in killed)

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("raylane")
    train_run = client.search_runs([experiment.experiment_id], "tags.`raylane.stage` = 'train'")[0]
    # Epoch metrics are logged at the global optimizer step, so they share an x axis with step_loss.
    steps = Counter(m.step for m in client.get_metric_history(train_run.info.run_id, "train_loss"))
    per_epoch = min(steps)
    assert sorted(steps) == [per_epoch, 2 * per_epoch], steps  # every epoch finished
    assert steps[per_epoch] == 1, log[-6000:]  # resumed from epoch 1's checkpoint, not from scratch
    assert sum(steps.values()) <= 3, log[-8000:]  # at most the epoch in flight was done twice
    assert (out / "models").is_dir() and any((out / "models").iterdir())
