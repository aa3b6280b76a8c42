"""Scores a split with Ray Data actors and reports what a reviewer asks for: accuracy, macro and
weighted precision/recall/F1, a per-class table, a confusion matrix, PR and ROC curves for binary
tasks, and the slices declared in `evaluate.slices` (JSON + PNGs, and into MLflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raylane.config import PipelineConfig, SliceConfig
from raylane.dataset import DatasetInfo
from raylane.evaluate.curves import plot_curves, precision_recall, roc
from raylane.evaluate.report import ClassScores, Evaluation, ServingVariant, SliceScores
from raylane.evaluate.slices import column, membership
from raylane.metrics import confusion_matrix, plot_confusion_matrix, summarize
from raylane.runtime import on_this_node
from raylane.tracking import RunRef

# The numbers of raylane.metrics.summarize that a report, the gate and MLflow carry.
HEADLINE = (
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
)
SLICE_METRICS = ("accuracy", "macro_f1", "weighted_f1")


def _flag_slices(batch: pd.DataFrame, rules: list[SliceConfig]) -> pd.DataFrame:
    for name, mask in membership([str(t) for t in batch["text"]], rules).items():
        batch[name] = mask
    return batch


def score_split(
    cfg: PipelineConfig,
    model_dir: str,
    dataset: DatasetInfo,
    split: str,
    quantize: str = "none",
    prune_amount: float = 0.0,
) -> pd.DataFrame:
    """One row per example: true label id, predicted label name, class scores and slice flags.
    Texts stay on the workers; only these small columns come back to the driver."""
    import ray.data

    from raylane.predictor import ScoreBatch

    rules = cfg.evaluate.slices
    ds = dataset.read_split(split)
    if rules:
        ds = ds.map_batches(_flag_slices, batch_format="pandas", fn_kwargs={"rules": rules})
    scored = ds.map_batches(
        ScoreBatch,
        batch_format="pandas",
        batch_size=cfg.evaluate.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.resources.predict_actors),
        fn_constructor_kwargs={
            "model_dir": model_dir,
            "with_probs": True,
            "quantize": quantize,
            "prune_amount": prune_amount,
        },
        **on_this_node(),
    )
    return scored.select_columns(["label", "pred_label", "probs", *(column(r.name) for r in rules)]).to_pandas()


def model_labels(model_dir: str) -> list[str]:
    """The model's class names in its output order (a champion may order them differently)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    id2label = config["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


def evaluate_predictions(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    positive_score: np.ndarray | None,
    slices: dict[str, np.ndarray],
    labels: list[str],
    split: str = "test",
    model_dir: str = "",
) -> Evaluation:
    """All the numbers, from label ids (dataset order). `positive_score` (binary tasks) is the
    model's score for labels[1]; `slices` maps slice column -> row mask."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    summary = summarize(cm, labels)
    metrics = {k: summary[k] for k in HEADLINE}
    if positive_score is not None:
        positives = y_true == 1
        metrics["roc_auc"] = roc(positives, positive_score)["auc"]
        metrics["average_precision"] = precision_recall(positives, positive_score)["average_precision"]
    scored_slices = {}
    for name, mask in slices.items():
        part = summarize(confusion_matrix(y_true[mask], y_pred[mask], len(labels)), labels) if mask.any() else None
        scored_slices[name.removeprefix("slice_")] = SliceScores(
            rows=int(mask.sum()), metrics={k: part[k] for k in SLICE_METRICS} if part else {}
        )
    return Evaluation(
        split=split,
        model_dir=model_dir,
        rows=int(cm.sum()),
        labels=labels,
        metrics=metrics,
        per_class={name: ClassScores(**row) for name, row in summary["per_class"].items()},
        slices=scored_slices,
        confusion_matrix=cm.tolist(),
    )


def run_evaluation(
    cfg: PipelineConfig,
    model_dir: str,
    dataset: DatasetInfo,
    out_dir: Path,
    mlflow_run: RunRef | None = None,
    split: str = "test",
) -> Evaluation:
    """Score `split` with the model, write `evaluation.json` and the plots to `out_dir`, and log
    them to `mlflow_run` when given."""
    labels = dataset.label_names
    scored = score_split(cfg, model_dir, dataset, split)
    index = {name: i for i, name in enumerate(labels)}
    unknown = set(scored["pred_label"]) - index.keys()
    if unknown:
        raise ValueError(f"model {model_dir} predicts labels the dataset lacks: {sorted(unknown)}")
    y_true = scored["label"].to_numpy(dtype=np.int64)
    y_pred = scored["pred_label"].map(index).to_numpy(dtype=np.int64)
    positive_score = None
    if len(labels) == 2:
        probs = np.stack(scored["probs"].to_numpy())
        positive_score = probs[:, model_labels(model_dir).index(labels[1])]
    slices = {c: scored[c].to_numpy(dtype=bool) for c in scored.columns if c.startswith("slice_")}
    evaluation = evaluate_predictions(y_true, y_pred, positive_score, slices, labels, split, model_dir)
    if cfg.serve.quantize != "none" or cfg.serve.prune_amount > 0:
        variant = _score_serving_variant(cfg, model_dir, dataset, split, y_true, index, evaluation.metrics)
        evaluation = evaluation.model_copy(update={"serving_variant": variant})
    cm = np.array(evaluation.confusion_matrix)

    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {"confusion_matrix.png": plot_confusion_matrix(cm, labels, title=f"{split} split, {len(y_true)} rows")}
    if positive_score is not None:
        figures["pr_roc.png"] = plot_curves(y_true == 1, positive_score, labels[1], f"{split} split")
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


def _score_serving_variant(
    cfg: PipelineConfig,
    model_dir: str,
    dataset: DatasetInfo,
    split: str,
    y_true: np.ndarray,
    index: dict[str, int],
    fp32: dict[str, float],
) -> ServingVariant:
    """What the compressed model the replicas will serve (serve.quantize / serve.prune_amount)
    costs: its accuracy and weighted F1 on the same split, and the change in points."""
    from raylane.compress import describe

    scored = score_split(cfg, model_dir, dataset, split, cfg.serve.quantize, cfg.serve.prune_amount)
    y_pred = scored["pred_label"].map(index).to_numpy(dtype=np.int64)
    labels = dataset.label_names
    compressed = summarize(confusion_matrix(y_true, y_pred, len(labels)), labels)
    metrics = {k: compressed[k] for k in ("accuracy", "weighted_f1")}
    return ServingVariant(
        variant=describe(cfg.serve.quantize, cfg.serve.prune_amount),
        metrics=metrics,
        delta_points={k: round(100 * (v - fp32[k]), 3) for k, v in metrics.items()},
    )


def flat_metrics(evaluation: Evaluation) -> dict[str, float]:
    """Every number of the report as `<split>_<name>`, the way MLflow shows them side by side."""
    split = evaluation.split
    flat = {f"{split}_{k}": v for k, v in evaluation.metrics.items()}
    flat.update({f"{split}_f1_{name}": row.f1 for name, row in evaluation.per_class.items()})
    flat.update({f"{split}_slice_{name}_rows": row.rows for name, row in evaluation.slices.items()})
    flat.update(
        {f"{split}_slice_{name}_{k}": v for name, row in evaluation.slices.items() for k, v in row.metrics.items()}
    )
    variant = evaluation.serving_variant
    if variant:
        flat.update({f"{split}_serving_{k}": v for k, v in variant.metrics.items()})
        flat.update({f"{split}_serving_{k}_delta_points": v for k, v in variant.delta_points.items()})
    return flat


def _log(mlflow_run: RunRef, evaluation: Evaluation, figures: dict[str, Any]) -> None:
    mlflow_run.log_metrics(flat_metrics(evaluation))
    if evaluation.serving_variant:
        mlflow_run.set_tags({"serving_variant": evaluation.serving_variant.variant})
    mlflow_run.log_artifact(evaluation.report_path)
    mlflow_run.log_table(
        pd.DataFrame([{"class": name, **row.model_dump()} for name, row in evaluation.per_class.items()]),
        "per_class.json",
    )
    for file_name, figure in figures.items():
        mlflow_run.log_figure(figure, file_name)


def format_table(evaluation: Evaluation) -> str:
    """The per-class table (and slices) as text, for the console."""
    metrics = evaluation.metrics
    lines = [f"{'class':<32}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for name, row in evaluation.per_class.items():
        lines.append(f"{name:<32}{row.precision:>10.3f}{row.recall:>10.3f}{row.f1:>10.3f}{row.support:>9d}")
    lines.append(f"{'accuracy':<32}{metrics['accuracy']:>30.3f}")
    lines.append(
        f"{'macro avg':<32}{metrics['macro_precision']:>10.3f}{metrics['macro_recall']:>10.3f}"
        f"{metrics['macro_f1']:>10.3f}"
    )
    lines.append(
        f"{'weighted avg':<32}{metrics['weighted_precision']:>10.3f}{metrics['weighted_recall']:>10.3f}"
        f"{metrics['weighted_f1']:>10.3f}"
    )
    if "roc_auc" in metrics:
        lines.append(f"ROC AUC {metrics['roc_auc']:.3f}   average precision {metrics['average_precision']:.3f}")
    for name, row in evaluation.slices.items():
        m = row.metrics
        scores = f"accuracy {m['accuracy']:.3f}  weighted F1 {m['weighted_f1']:.3f}" if row.rows else "no rows"
        lines.append(f"slice {name:<26}{row.rows:>6d} rows  {scores}")
    variant = evaluation.serving_variant
    if variant:
        m, d = variant.metrics, variant.delta_points
        lines.append(
            f"served as {variant.variant}: accuracy {m['accuracy']:.3f} ({d['accuracy']:+.2f} points), "
            f"weighted F1 {m['weighted_f1']:.3f} ({d['weighted_f1']:+.2f} points)"
        )
    return "\n".join(lines)
