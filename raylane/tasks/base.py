"""The task seam: what varies between kinds of model, and nothing else.

A task is an `Inputs` (what a row holds and how a model sees it: text, an image) and a `Target`
(what is predicted: one label, several labels, a number). Every stage calls these two through
the `Task` and holds no `if task == ...` of its own: ingest asks the inputs to prepare a row and
the target to validate its label; training asks the inputs to collate a batch and the target
for the model head, the loss and the metrics; evaluation, the gate, the registry, serving and
drift ask the same objects. A new kind of model is a new `Inputs` or `Target` and one line in
the registry (`raylane.tasks`).

Both halves are plain objects with no state, picklable, so Ray ships them to workers as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

# A label string holding several labels (multi-label targets) joins them with this separator,
# which no cleaned label can contain.
LABEL_JOIN = "\x1f"


class RequestProblem(ValueError):
    """A request the server refuses (before scoring it), with its HTTP status."""

    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail
        super().__init__(detail)


@dataclass(frozen=True)
class LabelCheck:
    """A raw label, made canonical (`value`), or the reason it cannot be used."""

    value: str
    reason: str = ""
    detail: str = ""


class Target:
    """What the model predicts. Subclasses: `SingleLabel`, `MultiLabel`, `Numeric`."""

    kind: ClassVar[str]
    # Metric names a run may rank by (train.metric), the default, and whether lower is better.
    metrics: ClassVar[tuple[str, ...]]
    default_metric: ClassVar[str]
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    # The evaluation's headline metric: what the gate's max_regression compares with the champion.
    headline: ClassVar[str]
    has_label_set: ClassVar[bool] = True
    stratifiable: ClassVar[bool] = False
    calibrated_on_val: ClassVar[bool] = False  # the exported model is calibrated on the val split
    # False: metrics come from the loss alone (a language model's logits are far too big to gather).
    keeps_outputs: ClassVar[bool] = True
    unit: ClassVar[str] = "rows"  # what losses are averaged over: rows, or answer tokens
    free_text: ClassVar[bool] = False  # the label is free text (an answer): PII is masked in it too

    # --- ingest -------------------------------------------------------------------------------
    def check_label(self, raw: str | None, separator: str = "") -> LabelCheck:
        raise NotImplementedError

    def names(self, label: str) -> list[str]:
        """The label names a canonical label string holds (none for a number)."""
        return [label] if label else []

    def known(self, label: str, label_set: frozenset[str]) -> bool:
        return all(name in label_set for name in self.names(label))

    def encode(self, labels, label_set: list[str]):
        """Canonical label strings (a pyarrow array) -> the shard's `label` column."""
        raise NotImplementedError

    # --- model --------------------------------------------------------------------------------
    def num_outputs(self, labels: list[str]) -> int:
        return len(labels)

    def label_tensor(self, values, n_labels: int, extras: dict[str, Any]):
        """The shard's `label` values of a batch -> what the loss compares the logits with."""
        raise NotImplementedError

    def problem_type(self) -> str:
        raise NotImplementedError

    def weight(self, labels) -> int:
        """What a batch's summed loss is divided by for its mean: here its rows."""
        return len(labels)

    def loss_metrics(self, mean_loss: float) -> dict[str, float]:
        """Metrics that follow from the mean loss alone (when `keeps_outputs` is False)."""
        return {}

    def loss(self, logits, labels, settings: dict[str, Any]):
        raise NotImplementedError

    def outputs(self, logits: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        """Logits -> what the model says: class probabilities, label probabilities, a value."""
        raise NotImplementedError

    def truth(self, label_values: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        """What `label_tensor` gave the loss -> the true values metrics compare `outputs` with."""
        return label_values

    # --- metrics ------------------------------------------------------------------------------
    def score(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], detailed: bool = False
    ) -> dict[str, Any]:
        """Metrics of `outputs` against `y_true`: {"metrics": {...}, "per_class": {...}, ...}."""
        raise NotImplementedError

    def metric_mode(self, metric: str) -> str:
        return "min" if metric.endswith("loss") or metric in self.lower_is_better else "max"

    def plots(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], title: str
    ) -> dict[str, Any]:
        """Matplotlib figures a reviewer would rather look at than a table, by file name."""
        return {}

    def gate_rules(self, gate, evaluation) -> list[tuple[str, bool, str]]:
        """(config key, passed, why) for each absolute rule of `gate` this target has."""
        return []

    def shard_truth(self, values, n_labels: int) -> np.ndarray:
        """A split's `label` column (as the shards store it) -> the truth `score` compares with."""
        return np.asarray(values)

    def extras(self, manifest) -> dict[str, Any]:
        """What the model needs from the dataset to turn logits into answers (saved with it)."""
        return {}

    def settings(self, cfg) -> dict[str, Any]:
        """What the model keeps of the config to answer as evaluated (saved with it)."""
        return {}

    def calibrate(self, truth: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
        """Extras tuned on the validation split's outputs (when `calibrated_on_val`)."""
        return {}

    # --- serving ------------------------------------------------------------------------------
    def answer(self, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], top_k: int = 1) -> list[dict]:
        """One JSON-able answer per row of `outputs`."""
        raise NotImplementedError

    def answer_columns(self, answers: list[dict]) -> dict[str, list]:
        """The answers as table columns (batch prediction's output)."""
        raise NotImplementedError

    def output_example(self, labels: list[str], extras: dict[str, Any]) -> dict[str, list]:
        """An answer as the pyfunc's output columns (the registered signature's output)."""
        answers = self.answer(np.full((1, max(1, len(labels))), 0.9), labels, extras)
        return self.answer_columns(answers)

    def answer_model(self):
        """The pydantic model of one answer, for the HTTP API's schema."""
        raise NotImplementedError

    def observation(self, answer: dict) -> dict[str, Any]:
        """What drift watches of an answer (`raylane.drift`): the label(s) or the value."""
        return {}


class Inputs:
    """What a row holds and how the model sees it. Subclasses: `TextInputs`, `ImageInputs`."""

    kind: ClassVar[str]
    modality: ClassVar[str]
    column: ClassVar[str]  # the shards' (and the pyfunc's) column the model reads
    drift_feature: ClassVar[str]  # what drift watches of an input (`raylane.drift`)

    def example(self) -> dict[str, list]:
        """An input example, as the pyfunc's DataFrame columns."""
        raise NotImplementedError

    def raw_preparer(self, model_dir: str):
        """A function that prepares one raw input as ingest prepared the training data."""
        return lambda item: item

    def request_model(self):
        """The pydantic model of a POST /predict body (every string with a length limit)."""
        raise NotImplementedError

    def upload_request(self, blobs: list[bytes]):
        """A request made of uploaded files, one input each."""
        raise NotImplementedError

    def items(self, request, limits) -> list:
        """The request's inputs, checked against the deployment's limits (`limits`: the serve
        settings), or a `RequestProblem`."""
        raise NotImplementedError

    def fields(self, data) -> list[str]:
        """The source columns the reader extracts for the inputs, in order (the label follows)."""
        raise NotImplementedError

    def prepare(
        self, columns: list, spec, errors: list[str], sources: list[str], blobs: list | None = None
    ) -> dict[str, Any]:
        """The input part of a block of reader rows: per row "text" (what a person reads of it),
        "hash" (its content, for dedup and the split), "n_chars", "reason" and "detail" (an input
        problem, or ""), "pii" (counts per kind), and the inputs' own payload columns."""
        raise NotImplementedError


@dataclass(frozen=True)
class Task:
    name: str
    inputs: Inputs
    target: Target
    description: str = ""

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(f"val_{m}" for m in self.target.metrics) + ("val_loss",)

    def resolve_metric(self, metric: str) -> str:
        """train.metric, with "auto" made the target's default."""
        return f"val_{self.target.default_metric}" if metric == "auto" else metric

    def metric_mode(self, metric: str) -> str:
        return self.target.metric_mode(self.resolve_metric(metric).removeprefix("val_"))
