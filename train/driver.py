"""Builds and runs the `TorchTrainer` (driver side). Tune trials call `fit` too, so a sweep
trains with exactly this code."""

from __future__ import annotations

import functools
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig
from raylane.console import verbose
from raylane.dataset import DatasetInfo
from raylane.models import is_adapter
from raylane.scoring import outputs_of, score_split
from raylane.tasks import get_task
from raylane.tasks.saved import SavedTask
from raylane.text import TextPrep
from raylane.tracking import RunRef
from raylane.train.checkpoint import MODEL_DIR
from raylane.train.distill import read_soft_targets
from raylane.train.loop import train_fn_per_worker
from raylane.train.lora import base_reference, point_at_base


@dataclass(frozen=True)
class TrainResult:
    model_dir: str  # save_pretrained directory of the best epoch: what evaluate and register consume
    checkpoint_uri: str
    metrics: dict[str, Any]  # metrics of the best epoch
    run_id: str = ""  # the MLflow run that produced it (train or sweep stage), for lineage


def storage_path(cfg: PipelineConfig) -> str:
    return cfg.train.storage_path or str(cfg.output_path / "checkpoints")


def build_trainer(
    cfg: PipelineConfig, dataset: DatasetInfo, mlflow_run: RunRef | None, name: str, callbacks=(), label: str = ""
):
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    res = cfg.resources
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config={
            "cfg": cfg,
            "label_names": dataset.label_names,
            "train_rows": dataset.manifest.splits["train"],
            "max_length": dataset.manifest.max_length,
            "extras": get_task(cfg.task).target.extras(dataset.manifest),
            "mlflow_run": mlflow_run,
            "local_mode": res.num_workers == 0,
            "label": label,  # what starts each console line of this run (a sweep's trial id)
        },
        scaling_config=ScalingConfig(
            num_workers=res.num_workers,
            use_gpu=res.use_gpu,
            resources_per_worker={"CPU": res.cpus_per_worker, **({"GPU": 1} if res.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path(cfg),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.checkpoints_to_keep,
                checkpoint_score_attribute=cfg.train.metric,
                checkpoint_score_order=cfg.train.metric_mode,
            ),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=list(callbacks),
            # Ray Train's per-report INFO lines repeat every metric; the loop prints its own line.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets={split: _materialized(cfg, dataset, split) for split in ("train", "val")},
    )


def _materialized(cfg: PipelineConfig, dataset: DatasetInfo, split: str):
    """Read before the workers claim the CPUs: on a small box a streaming read would wait for a
    CPU the workers hold, forever. Tokenized splits are compact, so this is cheap. A distilled
    model trains on the rows with their teacher's soft targets."""
    if split == "train" and cfg.train.distill.teacher:
        ds = read_soft_targets(cfg, dataset).materialize()
    else:
        ds = dataset.read_split(split).materialize()
    # Per-epoch progress comes from the loop's own line; per-iteration bars would drown it.
    ds.context.enable_progress_bars = False
    return ds


def fit(
    cfg: PipelineConfig,
    dataset: DatasetInfo,
    mlflow_run: RunRef | None = None,
    name: str | None = None,
    callbacks=(),
    label: str = "",
) -> TrainResult:
    """Train, then export the best epoch's model under <output_dir>/models/<name>."""
    name = name or time.strftime("train-%Y%m%d-%H%M%S")
    result = _keeping_sigint(build_trainer(cfg, dataset, mlflow_run, name, callbacks, label).fit)
    if result.error:
        raise result.error
    exported = export_best(cfg, dataset, result, name)
    if mlflow_run:
        mlflow_run.set_tags({"best_epoch": exported.metrics.get("epoch"), "checkpoint": exported.checkpoint_uri})
    return exported


def _keeping_sigint(run):
    """`run()`, with this process's Ctrl-C handler as it was before. Ray Train v2's fit installs
    one that aborts its controller and never removes it: a Ctrl-C afterwards (stopping `serve`,
    or arriving while the process exits) called a dead controller and even started a new local
    Ray from the exit hook. Only the main thread may set handlers (a Tune trial runs fit in
    another, and there is nothing to restore)."""
    if threading.current_thread() is not threading.main_thread():
        return run()
    previous = signal.getsignal(signal.SIGINT)
    try:
        return run()
    finally:
        signal.signal(signal.SIGINT, previous)


def export_best(cfg: PipelineConfig, dataset: DatasetInfo, result, name: str) -> TrainResult:
    """Copy the best epoch's model out of its checkpoint to <output_dir>/models/<name>, with what
    it needs to answer on its own: its task (labels, target scale), and the text preparation."""
    best, metrics = _best(result, cfg.train.metric, cfg.train.metric_mode)
    export = cfg.output_path / "models" / name
    if export.exists():
        shutil.rmtree(export)
    with best.as_directory() as d:
        shutil.copytree(Path(d) / MODEL_DIR, export)
    if is_adapter(export):
        _finish_adapter_export(cfg, dataset, export)
    # Serving and batch prediction must prepare raw text the way ingest prepared the training
    # data: that is the dataset's preparation, whatever the config says now.
    prep = dataset.manifest.preparation
    TextPrep(prep.lowercase, tuple(prep.mask_pii)).save(export)
    target = get_task(cfg.task).target
    saved = SavedTask(cfg.task, dataset.label_names, {**target.extras(dataset.manifest), **target.settings(cfg)})
    saved.write(export)
    calibrated = target.calibrate(functools.partial(_score_val, cfg, dataset, str(export)))
    if calibrated:  # e.g. multi-label thresholds, tuned on what the model says of val
        saved.with_extras(**calibrated).write(export)
    return TrainResult(str(export), best.path, dict(metrics))


def _score_val(cfg: PipelineConfig, dataset: DatasetInfo, model_dir: str) -> tuple:
    """(truth, outputs) of the exported model on the validation split."""
    target = get_task(cfg.task).target
    scored = score_split(model_dir, dataset, "val", cfg.resources.predict_actors, cfg.evaluate.batch_size)
    return target.shard_truth(scored["label"].tolist(), len(dataset.label_names)), outputs_of(scored)


def _finish_adapter_export(cfg: PipelineConfig, dataset: DatasetInfo, export: Path) -> None:
    """A LoRA checkpoint holds the adapter: name its base as configured (not this worker's path
    to it), and for a merged export fold it into the base weights, leaving a plain model."""
    point_at_base(export, base_reference(cfg.model.name_or_path))
    if cfg.train.peft_export == "adapter":
        return
    task = get_task(cfg.task)
    model = task.inputs.load_model(str(export), dataset.label_names, task.target)  # base + adapter, merged
    processor = task.inputs.load_processor(str(export))
    shutil.rmtree(export)
    if not verbose():
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its "Writing model shards" bar
    model.save_pretrained(export)
    processor.save_pretrained(export)


def _best(result, metric: str, mode: str):
    """The best (checkpoint, metrics); local mode keeps no ranking, so its last one stands in."""
    ranked = result.best_checkpoints or [(result.checkpoint, result.metrics)]
    pick = min if mode == "min" else max
    return pick(ranked, key=lambda pair: pair[1][metric])
