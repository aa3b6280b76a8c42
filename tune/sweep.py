"""A Ray Tune sweep over the training driver (the Train v2 pattern: a function trainable that
calls `train.driver.fit` with Tune's report callback; `Tuner(trainer)` is gone in v2)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig, TrainConfig, from_dict
from raylane.console import verbose
from raylane.dataset import DatasetInfo
from raylane.manifest import Record
from raylane.tracking import RunRef, close_open_children, start_run
from raylane.train.driver import TrainResult, _keeping_sigint, export_best, fit, storage_path
from raylane.tune.search import concurrent_trials, num_samples, scheduler, search_algorithm
from raylane.tune.space import to_param_space

# A trial only coordinates its Train workers; it must not hold a CPU they need.
TRIAL_RESOURCES = {"cpu": 0, "memory": 256 * 1024**2}


class TrialSummary(Record):
    """One trial of a sweep, as `trials.json` lists it and the console prints it."""

    trial_id: str
    params: dict[str, Any]
    metric: str  # train.metric, which ranks the trials
    best: float | None  # its best value over the epochs the trial ran; None if it reported none
    epochs: int
    completed: bool  # False: stopped early by the scheduler, or failed (see error)
    error: str | None = None


@dataclass(frozen=True)
class SweepResult:
    best: TrainResult
    best_params: dict[str, Any]
    trials: list[TrialSummary]


def trial_config(cfg: PipelineConfig, params: dict[str, Any]) -> PipelineConfig:
    """The pipeline config with the trial's sampled train.* values (`lora.r` sets train.lora.r),
    type-checked like YAML."""
    values = dataclasses.asdict(cfg.train)
    for key, value in params.items():
        section, _, name = key.partition(".")
        if name:
            values[section] = {**values[section], name: value}
        else:
            values[key] = value
    return dataclasses.replace(cfg, train=from_dict(TrainConfig, values, prefix="train."))


def describe_params(params: dict[str, Any]) -> str:
    """`lr=3e-05 batch_size=16`: a trial's sampled values, short enough for a run name."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def run_trial(
    params: dict[str, Any], cfg: PipelineConfig, dataset: DatasetInfo, sweep_run: RunRef | None, sweep_name: str
) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    trial_cfg = trial_config(cfg, params)
    name = f"{sweep_name}-{trial_id}"
    label = f"trial {trial_id}"
    if sweep_run is None:
        fit(trial_cfg, dataset, None, name=name, callbacks=[TuneReportCallback()], label=label)
        return
    run_name = f"trial-{trial_id} {describe_params(params)}"
    # Held here: once Tune has stopped the trial it clears the session's global (seen: the
    # failing `fit` then found none, and the run was marked FAILED).
    session = _tune_session()
    with start_run(cfg, run_name, parent=sweep_run, tags={"trial_id": trial_id}, stage="trial") as trial_run:
        dataset.log_inputs(trial_run, ("train", "val"))
        trial_run.log_params({f"train.{k}": v for k, v in params.items()})
        try:
            fit(trial_cfg, dataset, trial_run, name=name, callbacks=[TuneReportCallback()], label=label)
        except Exception:
            if session is not None and session.stop_event.wait(timeout=STOP_GRACE_S):
                raise SystemExit(0) from None  # the trial run is marked KILLED, as ASHA's stop is
            raise


# How long a trial whose training broke waits to learn whether Tune is stopping it.
STOP_GRACE_S = 10.0


def _tune_session():
    """The trial's Tune session. Tune stops a trial (ASHA's verdict) by setting the session's
    stop event and tearing down its resources; the teardown can reach the Train controller under
    `fit` first (seen: ActorDiedError, "its placement group was removed"), so a trial whose
    training broke waits a moment for the event before calling it a failure."""
    from ray.train._internal.session import get_session

    return get_session()


def trial_lines(cfg: PipelineConfig):
    """A Tune callback printing one line when a trial starts, and one when it ends (finished,
    stopped early by the scheduler, or failed): the sweep's progress in a few lines, where Tune's
    own reporter prints a table of every metric per trial per epoch."""
    from ray.tune import Callback

    from raylane.console import say

    metric, epochs, patience = cfg.train.metric, cfg.train.epochs, cfg.train.early_stopping_patience

    class TrialLines(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            say(f"sweep: trial {trial.trial_id} started  {describe_params(trial.config)}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            say(f"sweep: trial {trial.trial_id} {trial_outcome(trial.last_result or {}, epochs, metric, patience)}")

        def on_trial_error(self, iteration, trials, trial, **info):
            say(f"sweep: trial {trial.trial_id} FAILED; see {trial.path}")

    return TrialLines()


def trial_outcome(result: dict, epochs: int, metric: str, patience: int) -> str:
    """How a trial ended, from its last reported metrics: all its epochs, its own early stopping
    (train.early_stopping_patience), or the scheduler's (ASHA)."""
    done = int(result.get("epoch", 0))
    if done >= epochs:
        how = "finished"
    elif result.get("early_stopped"):
        how = f"stopped early after {done} epoch(s): no better {metric} for {patience} epoch(s)"
    else:
        how = f"stopped early by the scheduler after {done} epoch(s)"
    return how + (f", {metric} {result[metric]:.4f}" if metric in result else "")


def run_sweep(
    cfg: PipelineConfig, dataset: DatasetInfo, sweep_run: RunRef | None = None, name: str | None = None
) -> SweepResult:
    """Run (or resume, when `<storage>/<name>` holds an interrupted sweep) and export the winner."""
    from ray.train import Result as TrainingResult

    name = name or cfg.sweep.name or time.strftime("sweep-%Y%m%d-%H%M%S")
    metric, mode = cfg.train.metric, cfg.train.metric_mode
    started = time.time()
    # Tune's fit installs a SIGINT handler that it never removes: after a sweep, `run` with
    # serve.keep_running swallowed the first Ctrl-C ("Stop signal received ... ending Ray Tune run")
    # and kept serving.
    grid = _keeping_sigint(_tuner(cfg, dataset, sweep_run, name).fit)
    if sweep_run:
        close_open_children(sweep_run, status="KILLED")  # trials ASHA stopped never closed their runs

    results = list(grid)
    trials = [_summarize_trial(r, cfg) for r in results]
    ranked = [t for t in trials if t.best is not None]
    if not ranked:
        raise RuntimeError(f"sweep {name}: no trial reported {metric}; see {storage_path(cfg)}/{name}")
    best_trial = (min if mode == "min" else max)(ranked, key=lambda t: t.best)
    # The winner's checkpoints are on storage whether it finished or ASHA cut it short.
    train_name = f"{name}-{best_trial.trial_id}"
    best_train = export_best(cfg, dataset, TrainingResult.from_path(f"{storage_path(cfg)}/{train_name}"), train_name)
    summary = SweepResult(best_train, best_trial.params, trials)
    if sweep_run:
        sweep_run.log_dict([t.model_dump() for t in trials], "trials.json")
        sweep_run.log_figure(plot_trials(results, metric), "trials.png")
        sweep_run.log_metrics(
            {
                f"best_{metric}": best_trial.best,
                "trials_completed": sum(t.completed for t in trials),
                "trials_stopped_early": sum(not t.completed for t in trials),
                "sweep_wall_s": time.time() - started,
            }
        )
        sweep_run.log_params({f"best.{k}": v for k, v in summary.best_params.items()})
        sweep_run.set_tags({"sweep_name": name, "best_trial": best_trial.trial_id})
    return summary


def _tuner(cfg: PipelineConfig, dataset: DatasetInfo, sweep_run: RunRef | None, name: str):
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, cfg=cfg, dataset=dataset, sweep_run=sweep_run, sweep_name=name),
        TRIAL_RESOURCES,
    )
    path = f"{storage_path(cfg)}/{name}"
    if tune.Tuner.can_restore(path):
        # Finished trials keep their results; interrupted ones start again, and their Train run
        # picks up from its own latest checkpoint (same storage path and name).
        print(f"sweep {name}: resuming the interrupted sweep at {path}")
        return tune.Tuner.restore(path, trainable, resume_errored=True)
    concurrent = concurrent_trials(cfg)
    return tune.Tuner(
        trainable,
        param_space=to_param_space(cfg.sweep.space),
        tune_config=tune.TuneConfig(
            metric=cfg.train.metric,
            mode=cfg.train.metric_mode,
            num_samples=num_samples(cfg, concurrent),
            scheduler=scheduler(cfg),
            search_alg=search_algorithm(cfg, concurrent),
        ),
        # Tune's own tables only with --verbose; by default a line per trial event.
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path(cfg),
            verbose=2 if verbose() else 0,
            callbacks=[] if verbose() else [trial_lines(cfg)],
        ),
    )


def plot_trials(results, metric: str):
    """The validation metric per epoch, one line per trial: where ASHA cut each one off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for result in results:
        history = result.metrics_dataframe
        if history is None or metric not in history:
            continue
        label = describe_params(result.config)
        ax.plot(history["epoch"], history[metric], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("sweep trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _summarize_trial(result, cfg: PipelineConfig) -> TrialSummary:
    metric, mode = cfg.train.metric, cfg.train.metric_mode
    history = result.metrics_dataframe
    reported = history is not None and metric in history and len(history)
    epochs = int(history["epoch"].max()) if reported else 0
    return TrialSummary(
        trial_id=str(result.metrics.get("trial_id")) if result.metrics else Path(result.path).name,
        params=dict(result.config),
        metric=metric,
        best=float(history[metric].min() if mode == "min" else history[metric].max()) if reported else None,
        epochs=epochs,
        completed=epochs >= cfg.train.epochs,
        error=str(result.error) if result.error and epochs < cfg.train.epochs else None,
    )
