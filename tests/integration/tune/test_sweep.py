"""Sweeps on a real local Ray and MLflow server: ASHA stops a hopeless trial, and an Optuna sweep
whose driver is killed resumes without rerunning its finished trial."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from mlflow import MlflowClient

from raylane.predictor import Predictor
from raylane.tracking import start_run
from raylane.tune.sweep import run_sweep
from tests.paths import REPO_ROOT


def _children(client: MlflowClient, parent) -> list:
    return client.search_runs([parent.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'")


def test_asha_stops_the_hopeless_trial_and_the_best_is_exported(smoke_dataset, smoke_cfg_factory, mlflow_server):
    # One trial at a time, the good one first (grid order): when the hopeless one (lr 1e-8, its
    # val loss stays at the initial ~1.39) reaches the first rung, the good one's epoch-1 loss is
    # already recorded there and ASHA must stop it.
    cfg = smoke_cfg_factory(
        f"tracking.uri={mlflow_server}",
        "tracking.experiment=sweep-test",
        "train.epochs=2",
        "train.metric=val_loss",
        "sweep.space={lr: {kind: grid, values: [6.0e-3, 1.0e-8]}}",
        "sweep.num_samples=1",
        "sweep.max_concurrent=1",
        "sweep.grace_period=1",
    )
    with start_run(cfg, "sweep") as sweep_run:
        result = run_sweep(cfg, smoke_dataset, sweep_run, name="asha-it")
    by_lr = {t.params["lr"]: t for t in result.trials}
    assert by_lr.keys() == {6.0e-3, 1.0e-8}
    assert by_lr[6.0e-3].completed and by_lr[6.0e-3].epochs == 2
    assert not by_lr[1.0e-8].completed and by_lr[1.0e-8].epochs == 1, result.trials  # stopped at rung 1
    assert result.best_params == {"lr": 6.0e-3}
    assert result.best.metrics["val_loss"] == by_lr[6.0e-3].best
    assert Predictor(result.best.model_dir).labels == smoke_dataset.label_names

    client = MlflowClient(mlflow_server)
    children = _children(client, sweep_run)
    assert len(children) == 2
    for child in children:
        assert child.info.status in ("FINISHED", "KILLED")
        assert "train.lr" in child.data.params
        assert len(client.get_metric_history(child.info.run_id, "val_loss")) >= 1
    artifacts = {a.path for a in client.list_artifacts(sweep_run.run_id)}
    assert {"trials.json", "trials.png"} <= artifacts
    assert client.get_run(sweep_run.run_id).data.metrics["trials_stopped_early"] == 1


def _terminated_trials(sweep_dir) -> int:
    """Trials Tune itself has saved as finished in its experiment state (what a restore reads)."""
    count = 0
    for state in sweep_dir.glob("experiment_state-*.json"):
        try:
            data = json.loads(state.read_text())
        except (json.JSONDecodeError, OSError):  # caught mid-write
            continue
        count = max(count, sum('"TERMINATED"' in trial[0] for trial in data.get("trial_data", [])))
    return count


def _kill_session(pid: int) -> None:
    """SIGKILL the driver and everything it started in its session."""
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == pid:
                proc.kill()
        except (ProcessLookupError, psutil.Error):
            continue


def test_killed_optuna_sweep_resumes_without_rerunning_finished_trials(
    smoke_dataset, tiny_model, mlflow_server, tmp_path, cli_env
):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "raylane",
        "tune",
        "--config",
        "configs/smoke.yaml",
        "--dataset",
        smoke_dataset.uri,
        f"model.name_or_path={tiny_model}",
        f"output_dir={out}",
        f"tracking.uri={mlflow_server}",
        "tracking.experiment=sweep-resume",
        "sweep.name=resume-it",
        # Optuna's sampler state is restored with the sweep's (one sweep tests both: each costs a
        # minute of Ray Train start-ups on 2 cores).
        "sweep.search=optuna",
        "sweep.num_samples=2",
        "sweep.max_concurrent=1",
        "sweep.scheduler=fifo",
        "train.epochs=1",  # what is resumed is the sweep, not a trial: one epoch each is enough
    ]
    # Both drivers join the session's Ray: killing the first kills its job (trials, Train
    # workers), which Ray then cleans up as it does any dead driver's.
    env = cli_env
    sweep_dir = out / "checkpoints" / "resume-it"

    first_log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=first_log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 300
    while _terminated_trials(sweep_dir) < 1:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
        assert time.time() < deadline, "no trial finished in 5 minutes"
        time.sleep(0.5)
    _kill_session(first.pid)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("sweep-resume")
    done_before = [
        r for r in client.search_runs([experiment.experiment_id], "tags.trial_id != ''") if r.info.status == "FINISHED"
    ]
    assert len(done_before) == 1
    finished_trial = done_before[0].data.tags["trial_id"]

    second = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    assert "resuming the interrupted sweep" in log
    trial_runs = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    assert [r.data.tags["trial_id"] for r in trial_runs].count(finished_trial) == 1  # not run again
    sweep_run = client.search_runs(
        [experiment.experiment_id], "tags.`raylane.stage` = 'sweep'", order_by=["attributes.start_time DESC"]
    )[0]
    trials = json.loads(
        Path(client.download_artifacts(sweep_run.info.run_id, "trials.json", str(tmp_path))).read_text()
    )
    assert len(trials) == 2 and all(t["completed"] for t in trials)
    lrs = [t["params"]["lr"] for t in trials]  # sampled by Optuna from configs/smoke.yaml's space
    assert len(set(lrs)) == 2 and all(3.0e-3 <= lr <= 6.0e-3 for lr in lrs), trials
    assert {t["params"]["batch_size"] for t in trials} <= {8, 16}
