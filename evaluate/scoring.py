"""Evaluation of a scoring model (classifiers, regression, images) on a split: scored with Ray Data
actors, it reports what a reviewer asks for, by task: the task's metrics (scikit-learn), a
per-class or per-label table, the pictures (confusion matrix and PR/ROC curves; per-label F1;
predicted against true values and residuals), and the slices declared in `evaluate.slices`
(JSON + PNGs, and into MLflow)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raylane.config import PipelineConfig
from raylane.dataset import DatasetInfo
from raylane.evaluate.report import ClassScores, Evaluation, ServingVariant, SliceScores, TeacherScores, flat_metrics
from raylane.evaluate.slices import column, flag_slices
from raylane.scoring import aligned, outputs_of, score_split
from raylane.tasks import get_task
from raylane.tasks.saved import read_saved_task
from raylane.tracking import RunRef


def model_labels(model_dir: str) -> list[str]:
    """The model's class names in its output order (a champion may order them differently)."""
    return read_saved_task(model_dir).labels


def _score(
    cfg: PipelineConfig,
    model_dir: str,
    dataset: DatasetInfo,
    split: str,
    quantize: str = "none",
    prune_amount: float = 0.0,
) -> tuple[pd.DataFrame, np.ndarray]:
    rules = cfg.evaluate.slices
    scored = score_split(
        model_dir,
        dataset,
        split,
        cfg.resources.predict_actors,
        cfg.evaluate.batch_size,
        quantize,
        prune_amount,
        flag=functools.partial(flag_slices, rules=rules) if rules else None,
        keep=tuple(column(r.name) for r in rules),
    )
    return scored, aligned(outputs_of(scored), model_labels(model_dir), dataset.label_names)


def evaluate_outputs(
    task_name: str,
    truth: np.ndarray,
    outputs: np.ndarray,
    slices: dict[str, np.ndarray],
    labels: list[str],
    extras: dict[str, Any],
    split: str = "test",
    model_dir: str = "",
) -> Evaluation:
    """All the numbers, from the truth and the model's outputs (dataset label order); `slices`
    maps slice column -> row mask."""
    target = get_task(task_name).target
    scored = target.score(truth, outputs, labels, extras, detailed=True)
    scored_slices = {}
    for name, mask in slices.items():
        part = target.score(truth[mask], outputs[mask], labels, extras)["metrics"] if mask.any() else {}
        scored_slices[name.removeprefix("slice_")] = SliceScores(
            rows=int(mask.sum()), metrics={k: v for k, v in part.items() if k in target.metrics}
        )
    return Evaluation(
        split=split,
        model_dir=model_dir,
        rows=len(truth),
        labels=labels,
        metrics=scored["metrics"],
        per_class={name: ClassScores(**row) for name, row in scored["per_class"].items()},
        slices=scored_slices,
        confusion_matrix=scored.get("confusion_matrix"),
    )


def run_scoring_evaluation(
    cfg: PipelineConfig,
    model_dir: str,
    dataset: DatasetInfo,
    out_dir: Path,
    mlflow_run: RunRef | None = None,
    split: str = "test",
) -> Evaluation:
    """Score `split` with the model, write `evaluation.json` and the plots to `out_dir`, and log
    them to `mlflow_run` when given."""
    target = get_task(cfg.task).target
    labels, extras = dataset.label_names, read_saved_task(model_dir).extras
    scored, outputs = _score(cfg, model_dir, dataset, split)
    truth = target.shard_truth(scored["label"].tolist(), len(labels))
    slices = {c: scored[c].to_numpy(dtype=bool) for c in scored.columns if c.startswith("slice_")}
    evaluation = evaluate_outputs(cfg.task, truth, outputs, slices, labels, extras, split, model_dir)
    if cfg.serve.quantize != "none" or cfg.serve.prune_amount > 0:
        variant = _score_serving_variant(cfg, model_dir, dataset, split, truth, extras, evaluation.metrics)
        evaluation = evaluation.model_copy(update={"serving_variant": variant})
    if cfg.train.distill.teacher:
        teacher = _score_teacher(cfg, dataset, split, truth, evaluation.metrics)
        evaluation = evaluation.model_copy(update={"teacher": teacher})

    out_dir.mkdir(parents=True, exist_ok=True)
    figures = target.plots(truth, outputs, labels, extras, f"{split} split, {len(truth)} rows")
    for file_name, figure in figures.items():
        figure.savefig(out_dir / file_name, dpi=120)
    evaluation = evaluation.model_copy(update={"plots": list(figures)}).write(out_dir / "evaluation.json")
    if mlflow_run:
        _log(mlflow_run, evaluation, figures)
    else:
        import matplotlib.pyplot as plt

        for figure in figures.values():
            plt.close(figure)
    return evaluation


def _metrics(
    cfg: PipelineConfig,
    model_dir: str,
    dataset: DatasetInfo,
    split: str,
    truth: np.ndarray,
    extras: dict[str, Any],
    quantize: str = "none",
    prune_amount: float = 0.0,
) -> dict[str, float]:
    """The task's ranking metrics of another model (or variant) on the split, beside the one evaluated."""
    target = get_task(cfg.task).target
    _, outputs = _score(cfg, model_dir, dataset, split, quantize, prune_amount)
    scored = target.score(truth, outputs, dataset.label_names, extras)["metrics"]
    return {k: v for k, v in scored.items() if k in target.metrics}


def _score_serving_variant(
    cfg: PipelineConfig,
    model_dir: str,
    dataset: DatasetInfo,
    split: str,
    truth: np.ndarray,
    extras: dict[str, Any],
    full: dict[str, float],
) -> ServingVariant:
    """What the compressed model the replicas will serve (serve.quantize / serve.prune_amount)
    costs: its metrics on the same split, and the change from the full model's, in points
    (100 x the difference)."""
    from raylane.compress import describe

    metrics = _metrics(cfg, model_dir, dataset, split, truth, extras, cfg.serve.quantize, cfg.serve.prune_amount)
    return ServingVariant(
        variant=describe(cfg.serve.quantize, cfg.serve.prune_amount),
        metrics=metrics,
        delta_points={k: round(100 * (v - full[k]), 3) for k, v in metrics.items()},
    )


def _score_teacher(
    cfg: PipelineConfig, dataset: DatasetInfo, split: str, truth: np.ndarray, student: dict[str, float]
) -> TeacherScores:
    """The teacher a model was distilled from, scored on the same split: what distillation kept."""
    from raylane.distill import resolve_teacher

    teacher = resolve_teacher(cfg)
    metrics = _metrics(cfg, teacher.model_dir, dataset, split, truth, read_saved_task(teacher.model_dir).extras)
    return TeacherScores(
        teacher=teacher.uri,
        metrics=metrics,
        student_delta_points={k: round(100 * (student[k] - v), 3) for k, v in metrics.items()},
    )


def _log(mlflow_run: RunRef, evaluation: Evaluation, figures: dict[str, Any]) -> None:
    mlflow_run.log_metrics(flat_metrics(evaluation))
    if evaluation.serving_variant:
        mlflow_run.set_tags({"serving_variant": evaluation.serving_variant.variant})
    mlflow_run.log_artifact(evaluation.report_path)
    if evaluation.per_class:
        mlflow_run.log_table(
            pd.DataFrame([{"class": name, **row.model_dump()} for name, row in evaluation.per_class.items()]),
            "per_class.json",
        )
    for file_name, figure in figures.items():
        mlflow_run.log_figure(figure, file_name)
