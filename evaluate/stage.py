"""The evaluate stage: a model scored on a split by its task's engine. A scoring model's outputs
give the task's metrics, tables and pictures (`raylane.evaluate.scoring`); a generating model is
judged by what it writes (`raylane.evaluate.generation`). Both write `evaluation.json` to
`out_dir` and log to `mlflow_run`, and return the same typed report."""

from __future__ import annotations

from pathlib import Path

from raylane.config import PipelineConfig
from raylane.dataset import DatasetInfo
from raylane.evaluate.generation import run_generation_evaluation
from raylane.evaluate.report import Evaluation
from raylane.evaluate.scoring import run_scoring_evaluation
from raylane.tasks import get_task
from raylane.tracking import RunRef

EVALUATIONS = {"scoring": run_scoring_evaluation, "generating": run_generation_evaluation}


def run_evaluation(
    cfg: PipelineConfig,
    model_dir: str,
    dataset: DatasetInfo,
    out_dir: Path,
    mlflow_run: RunRef | None = None,
    split: str = "test",
) -> Evaluation:
    """Score `split` with the model, write the report and its pictures to `out_dir`, and log them
    to `mlflow_run` when given."""
    evaluate = EVALUATIONS[get_task(cfg.task).engine.name]
    return evaluate(cfg, model_dir, dataset, out_dir, mlflow_run, split)
