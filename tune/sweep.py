"""A Ray Tune sweep over the training driver (the Train v2 pattern: a function trainable that
calls `train.driver.fit` with Tune's report callback; `Tuner(trainer)` is gone in v2)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig, TrainConfig, from_dict
from raylane.dataset import DatasetInfo
from raylane.tracking import RunRef, close_open_children, start_run
from train.driver import TrainResult, export_best, fit, storage_path
from tune.space import to_param_space

# A trial only coordinates its Train workers; it must not hold a CPU they need.
TRIAL_RESOURCES = {"cpu": 0, "memory": 256 * 1024**2}


@dataclass(frozen=True)
class SweepResult:
    best: TrainResult
    best_params: dict[str, Any]
    trials: list[dict[str, Any]]


def trial_config(cfg: PipelineConfig, params: dict[str, Any]) -> PipelineConfig:
    """The pipeline config with the trial's sampled train.* values, type-checked like YAML."""
    train = from_dict(TrainConfig, {**dataclasses.asdict(cfg.train), **params}, prefix="train.")
    return dataclasses.replace(cfg, train=train)


def run_trial(params: dict[str, Any], cfg: PipelineConfig, dataset: DatasetInfo, sweep_run: RunRef | None,
              sweep_name: str) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    trial_cfg = trial_config(cfg, params)
    name = f"{sweep_name}-{trial_id}"
    if sweep_run is None:
        fit(trial_cfg, dataset, None, name=name, callbacks=[TuneReportCallback()])
        return
    with start_run(cfg, f"trial-{trial_id}", parent=sweep_run, tags={"trial_id": trial_id}) as run:
        run.log_params({f"train.{k}": v for k, v in params.items()})
        fit(trial_cfg, dataset, run, name=name, callbacks=[TuneReportCallback()])


def concurrent_trials(cfg: PipelineConfig) -> int:
    """As many trials as the cluster can give a full set of Train workers at once."""
    if cfg.sweep.max_concurrent:
        return cfg.sweep.max_concurrent
    import ray

    free = ray.cluster_resources()
    res = cfg.resources
    workers = max(1, res.num_workers)
    fits = int(free.get("CPU", 1) // (workers * res.cpus_per_worker))
    if res.use_gpu:
        fits = min(fits, int(free.get("GPU", 0) // workers))
    return max(1, fits)


def run_sweep(cfg: PipelineConfig, dataset: DatasetInfo, sweep_run: RunRef | None = None,
              name: str | None = None) -> SweepResult:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.train import Result as TrainingResult
    from ray.tune.search.basic_variant import BasicVariantGenerator

    name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
    sc, metric, mode = cfg.sweep, cfg.train.metric, cfg.train.metric_mode
    scheduler = (
        # ASHA stops a trial once it reports max_t, killing it before fit() returns; one past the
        # last epoch lets finished trials end (and close their MLflow runs) on their own.
        ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs + 1, grace_period=min(sc.grace_period, cfg.train.epochs),
                      reduction_factor=sc.reduction_factor)
        if sc.scheduler == "asha" else FIFOScheduler()
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, cfg=cfg, dataset=dataset, sweep_run=sweep_run, sweep_name=name),
        TRIAL_RESOURCES,
    )
    tuner = tune.Tuner(
        trainable,
        param_space=to_param_space(sc.space),
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, num_samples=sc.num_samples, scheduler=scheduler,
            search_alg=BasicVariantGenerator(random_state=sc.seed, max_concurrent=concurrent_trials(cfg)),
        ),
        run_config=tune.RunConfig(name=name, storage_path=storage_path(cfg), verbose=1),
    )
    grid = tuner.fit()
    if sweep_run:
        close_open_children(sweep_run, status="KILLED")  # trials ASHA stopped never closed their runs

    results = list(grid)
    trials = [_summarize_trial(r, cfg) for r in results]
    key = f"best_{metric}"
    ranked = [(t, r) for t, r in zip(trials, results) if t[key] is not None]
    if not ranked:
        raise RuntimeError(f"sweep {name}: no trial reported {metric}; see {storage_path(cfg)}/{name}")
    best_trial, result = (min if mode == "min" else max)(ranked, key=lambda pair: pair[0][key])
    score = best_trial[key]
    # The winner's checkpoints are on storage whether it finished or ASHA cut it short.
    train_name = f"{name}-{best_trial['trial_id']}"
    best_train = export_best(cfg, TrainingResult.from_path(f"{storage_path(cfg)}/{train_name}"), train_name)
    summary = SweepResult(best_train, {k: result.config[k] for k in sc.space}, trials)
    if sweep_run:
        sweep_run.log_dict(trials, "trials.json")
        sweep_run.log_metrics({f"best_{metric}": score, "trials_completed": sum(t["completed"] for t in trials)})
        sweep_run.log_params({f"best.{k}": v for k, v in summary.best_params.items()})
    return summary


def _summarize_trial(result, cfg: PipelineConfig) -> dict[str, Any]:
    metric, mode = cfg.train.metric, cfg.train.metric_mode
    history = result.metrics_dataframe
    reported = history is not None and metric in history and len(history)
    epochs = int(history["epoch"].max()) if reported else 0
    return {
        "trial_id": result.metrics.get("trial_id") if result.metrics else Path(result.path).name,
        "params": {k: result.config[k] for k in cfg.sweep.space},
        f"best_{metric}": float(history[metric].min() if mode == "min" else history[metric].max()) if reported else None,
        "epochs": epochs,
        "completed": epochs >= cfg.train.epochs,
        "error": str(result.error) if result.error and epochs < cfg.train.epochs else None,
    }
