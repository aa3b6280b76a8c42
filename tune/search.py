"""How a sweep picks and stops trials, from the `sweep` section: the search algorithm, the
scheduler, and how many trials to run at once and in all (from the cluster's resources unless
the config says)."""

from __future__ import annotations

from raylane.config import PipelineConfig


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


def num_samples(cfg: PipelineConfig, concurrent: int) -> int:
    """The configured count, else one wave of concurrent trials (at least 2, or there is
    nothing to compare)."""
    return cfg.sweep.num_samples or max(2, concurrent)


def scheduler(cfg: PipelineConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sc = cfg.sweep
    if sc.scheduler == "fifo":
        return FIFOScheduler()
    # ASHA stops a trial once it reports max_t, killing it before fit() returns; one past the
    # last epoch lets finished trials end (and close their MLflow runs) on their own.
    return ASHAScheduler(
        time_attr="epoch",
        max_t=cfg.train.epochs + 1,
        grace_period=min(sc.grace_period, cfg.train.epochs),
        reduction_factor=sc.reduction_factor,
    )


def search_algorithm(cfg: PipelineConfig, concurrent: int):
    sc = cfg.sweep
    if sc.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        try:  # Ray's wrapper imports fine without Optuna and fails only once the sweep has started
            import optuna  # noqa: F401
        except ImportError as err:
            raise RuntimeError("sweep.search=optuna needs Optuna: pip install 'raylane[optuna]'") from err
        return ConcurrencyLimiter(OptunaSearch(seed=sc.seed), max_concurrent=concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=sc.seed, max_concurrent=concurrent)
