"""The evaluation report, as `run_evaluation` writes it (`evaluation.json`) and the gate, the
promotion, the model card and the pipeline's summary read it: a typed record, not a dict indexed
by string keys in each of them."""

from __future__ import annotations

from pathlib import Path

from raylane.manifest import Record


class ClassScores(Record):
    precision: float
    recall: float
    f1: float
    support: int


class SliceScores(Record):
    """A slice of the split (`evaluate.slices`): its size and, when it has rows, its metrics."""

    rows: int
    metrics: dict[str, float] = {}


class ServingVariant(Record):
    """What serving the compressed model (serve.quantize / serve.prune_amount) costs: its metrics on
    the same split, and the change from the full-precision model's, in points."""

    variant: str
    metrics: dict[str, float]
    delta_points: dict[str, float]


class Evaluation(Record):
    split: str
    model_dir: str
    rows: int
    labels: list[str]
    metrics: dict[str, float]  # accuracy, macro/weighted precision, recall and F1 (+ ROC AUC, AP when binary)
    per_class: dict[str, ClassScores]
    slices: dict[str, SliceScores] = {}
    confusion_matrix: list[list[int]] | None = None  # rows true, columns predicted, in `labels` order
    plots: list[str] = []  # image files beside the report
    serving_variant: ServingVariant | None = None
    report_path: str = ""

    @property
    def weighted_f1(self) -> float:
        return self.metrics["weighted_f1"]

    def write(self, path: Path) -> Evaluation:
        """Write the report to `path` and return it with `report_path` set."""
        written = self.model_copy(update={"report_path": str(path)})
        path.write_text(written.model_dump_json(indent=2))
        return written

    @classmethod
    def read(cls, path: Path) -> Evaluation:
        return cls.model_validate_json(Path(path).read_text())
