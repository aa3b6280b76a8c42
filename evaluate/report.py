"""The evaluation report, as `run_evaluation` writes it (`evaluation.json`) and the gate, the
promotion, the model card and the pipeline's summary read it: a typed record, not a dict indexed
by string keys in each of them; and the report as MLflow and the console show it."""

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


class TeacherScores(Record):
    """A distilled model's teacher on the same split (`train.distill`): its metrics, and the
    student's difference from them in points (100 x student - teacher)."""

    teacher: str
    metrics: dict[str, float]
    student_delta_points: dict[str, float]


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
    teacher: TeacherScores | None = None
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
    teacher = evaluation.teacher
    if teacher:
        flat.update({f"{split}_teacher_{k}": v for k, v in teacher.metrics.items()})
        flat.update({f"{split}_student_{k}_delta_points": v for k, v in teacher.student_delta_points.items()})
    return flat


def format_table(evaluation: Evaluation) -> str:
    """The per-class table, the metrics and the slices as text, for the console."""
    lines = []
    if evaluation.per_class:
        lines.append(f"{'class':<32}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for name, row in evaluation.per_class.items():
            lines.append(f"{name:<32}{row.precision:>10.3f}{row.recall:>10.3f}{row.f1:>10.3f}{row.support:>9d}")
    lines += [f"{name:<32}{value:>10.4f}" for name, value in evaluation.metrics.items()]
    for name, row in evaluation.slices.items():
        scores = "  ".join(f"{k} {v:.3f}" for k, v in row.metrics.items()) if row.rows else "no rows"
        lines.append(f"slice {name:<26}{row.rows:>6d} rows  {scores}")
    variant = evaluation.serving_variant
    if variant:
        changes = ", ".join(f"{k} {v:.3f} ({variant.delta_points[k]:+.2f} points)" for k, v in variant.metrics.items())
        lines.append(f"served as {variant.variant}: {changes}")
    teacher = evaluation.teacher
    if teacher:
        scores = ", ".join(
            f"{k} {v:.4f} (student {teacher.student_delta_points[k]:+.2f} points)" for k, v in teacher.metrics.items()
        )
        lines.append(f"teacher {teacher.teacher}: {scores}")
    return "\n".join(lines)
