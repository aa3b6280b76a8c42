"""Scores the test split with Ray Data actors and reports metrics, a per-class table and a
confusion matrix (JSON + PNG, and into MLflow)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ray.data

from raylane.config import PipelineConfig
from raylane.dataset import DatasetInfo
from raylane.metrics import confusion_matrix, plot_confusion_matrix, scalar_metrics, summarize
from raylane.predictor import ScoreBatch
from raylane.tracking import RunRef


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, Any]  # summarize() of the test split: accuracy, F1s, per_class
    report_path: str

    @property
    def weighted_f1(self) -> float:
        return self.metrics["weighted_f1"]


def run(cfg: PipelineConfig, model_dir: str, dataset: DatasetInfo, out_dir: Path, run: RunRef | None = None,
        split: str = "test") -> EvalResult:
    labels = dataset.label_names
    scored = dataset.read_split(split).map_batches(
        ScoreBatch,
        batch_format="pandas",
        batch_size=64,
        compute=ray.data.ActorPoolStrategy(size=cfg.resources.predict_actors),
        fn_constructor_kwargs={"model_dir": model_dir},
    )
    # Two small integer columns per row: the only thing that comes back to the driver.
    preds = scored.select_columns(["label", "pred_label"]).to_pandas()
    index = {name: i for i, name in enumerate(labels)}
    unknown = set(preds["pred_label"]) - index.keys()
    if unknown:
        raise ValueError(f"model {model_dir} predicts labels the dataset lacks: {sorted(unknown)}")
    cm = confusion_matrix(preds["label"].to_numpy(), preds["pred_label"].map(index).to_numpy(), len(labels))
    summary = summarize(cm, labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"split": split, "rows": int(cm.sum()), "model_dir": model_dir, **summary,
              "confusion_matrix": {"labels": labels, "matrix": cm.tolist()}}
    report_path = out_dir / "evaluation.json"
    report_path.write_text(json.dumps(report, indent=2))
    figure = plot_confusion_matrix(cm, labels, title=f"{split} split, {int(cm.sum())} rows")
    figure.savefig(out_dir / "confusion_matrix.png", dpi=120)
    if run:
        run.log_metrics(scalar_metrics(summary, f"{split}_"))
        run.log_metrics({f"{split}_f1_{name}": row["f1"] for name, row in summary["per_class"].items()})
        run.log_artifact(report_path)
        run.log_figure(figure, "confusion_matrix.png")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return EvalResult(summary, str(report_path))


def format_table(metrics: dict[str, Any]) -> str:
    """The per-class table as text, for the console."""
    lines = [f"{'class':<32}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for name, row in metrics["per_class"].items():
        lines.append(f"{name:<32}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9d}")
    lines.append(f"{'accuracy':<32}{metrics['accuracy']:>30.3f}")
    lines.append(f"{'macro avg':<32}{metrics['macro_precision']:>10.3f}{metrics['macro_recall']:>10.3f}"
                 f"{metrics['macro_f1']:>10.3f}")
    lines.append(f"{'weighted avg':<32}{metrics['weighted_precision']:>10.3f}{metrics['weighted_recall']:>10.3f}"
                 f"{metrics['weighted_f1']:>10.3f}")
    return "\n".join(lines)
