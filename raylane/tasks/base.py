"""The task seam: what varies between kinds of model, and nothing else.

A task is an `Inputs` (what a row holds and how a model sees it: text, an image, a conversation)
and a `Target` (what is learned: one label, several labels, a number, an answer). Every stage
calls these two through the `Task` and holds no `if task == ...` of its own.

The one fork that matters is the *engine* (`raylane.tasks.engine`), which follows from the
target: a model that **scores** (classifiers, regression, images: a forward pass gives outputs
that become answers) or one that **generates** (causal LMs: answers are decoded token by token).
The shared contract of each half is in `Inputs` and `Target`; what only a scoring model means
(outputs, answers, serving requests, calibration) is in `ScoredInputs` and `ScoredTarget`, so a
generating target implements only what it means and no method of a concrete class is a stub.

Each half also names the config keys that mean something only for it (`config_keys`); a key set
for a task none of whose halves owns it fails at load (`raylane.config.tasks`).

Both halves are plain objects with no state, picklable, so Ray ships them to workers as they are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from raylane.tasks.engine import SCORING, Engine

# A label string holding several labels (multi-label targets) joins them with this separator,
# which no cleaned label can contain.
LABEL_JOIN = "\x1f"
# The label of a position that carries no loss (torch's cross_entropy ignore_index): a prompt's
# tokens and padding, when only an answer is learned.
IGNORE = -100


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


class Target(ABC):
    """What the model learns, for every engine: the label's check and encoding at ingest, the
    loss and what it is averaged over, the metrics a run ranks by, and the gate's rules."""

    # Metric names a run may rank by (train.metric), the default, and which are lower-is-better.
    metrics: ClassVar[tuple[str, ...]]
    default_metric: ClassVar[str]
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    # The evaluation's headline metric: what the gate's max_regression compares with the champion.
    headline: ClassVar[str]
    config_keys: ClassVar[frozenset[str]] = frozenset()
    tallied: ClassVar[tuple[str, ...]] = ()  # what `tally` sums, beside the loss
    # Other tasks whose saved models this target's evaluation scores on its test split and compares
    # on its headline: a champion of one of them stays the one to beat (a chat model, for the
    # preference tuning that starts from it).
    rescores: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def engine(self) -> Engine:
        """How a model of this target answers: by scoring, or by generating."""

    # --- ingest -------------------------------------------------------------------------------
    @abstractmethod
    def check_label(self, raw: str | None, separator: str = "") -> LabelCheck: ...

    def names(self, label: str) -> list[str]:
        """The label names a canonical label string holds (none for a number or an answer)."""
        return []

    def known(self, label: str, label_set: frozenset[str]) -> bool:
        """Whether every label name in `label` is in the label set (always, when it holds none)."""
        return all(name in label_set for name in self.names(label))

    def label_set(self, seen: set[str], configured: list[str]) -> tuple[str, ...]:
        """The labels a model of this target predicts (data.labels, else those the data shows);
        none for a target without classes. A ValueError says why there cannot be a model."""
        return ()

    def mask_label(self, label: str, pii_kinds: tuple[str, ...]) -> tuple[str, dict[str, int]]:
        """The accepted label with personal data masked, where the label is text a model learns
        to write; as it is otherwise."""
        return label, {}

    def value_of(self, label: str) -> float | None:
        """The label as a number, for the manifest's target statistics (None: not a number)."""
        return None

    @abstractmethod
    def encode(self, labels, label_set: list[str]):
        """Canonical label strings (a pyarrow array) -> the shard's `label` column."""

    def shard_truth(self, values, n_labels: int) -> np.ndarray:
        """A split's `label` column (as the shards store it) -> the truth metrics compare with."""
        return np.asarray(values)

    # --- model --------------------------------------------------------------------------------
    @abstractmethod
    def problem_type(self) -> str: ...

    def num_outputs(self, labels: list[str]) -> int:
        return len(labels)

    @abstractmethod
    def loss(self, logits, labels, settings: dict[str, Any]):
        """The batch's summed loss (a sum, so means are exact over any split of rows)."""

    def weight(self, labels) -> int:
        """What a batch's summed loss is divided by for its mean: here its rows."""
        return len(labels)

    def batch_loss(self, forward, batch: dict[str, Any], settings: dict[str, Any]):
        """(the batch's summed loss, what its epoch record keeps of it): here the loss on the
        model's logits, and the logits. `forward()` runs the model being trained on the batch's
        inputs and `forward(other)` another model; a target whose loss needs more than one forward
        pass (a frozen reference's too) overrides this."""
        logits = forward()
        return self.loss(logits, batch["labels"], settings), logits

    def tally(self, outputs) -> dict[str, float]:
        """Sums over a batch's rows of what the target measures beside the loss (the names in
        `tallied`), from what `batch_loss` kept; an epoch's metric is each sum over all workers'
        rows, per row."""
        return {}

    def loss_metrics(self, mean_loss: float) -> dict[str, float]:
        """Metrics that follow from the mean loss alone (a language model's perplexity)."""
        return {}

    def rates(self, units: float, seconds: float) -> dict[str, float]:
        """Throughput metrics of an epoch beyond rows/s, from the summed `weight` of its batches."""
        return {}

    def extras(self, manifest) -> dict[str, Any]:
        """What the model needs from the dataset to answer (saved with it)."""
        return {}

    def settings(self, cfg) -> dict[str, Any]:
        """What the model keeps of the config to answer as evaluated (saved with it)."""
        return {}

    def calibrate(self, scored_val) -> dict[str, Any]:
        """Extras tuned on the validation split; `scored_val()` gives (truth, outputs) of the
        exported model there, and is called only by a target that calibrates (it scores a split)."""
        return {}

    @abstractmethod
    def output_example(self, labels: list[str], extras: dict[str, Any]) -> dict[str, list]:
        """An answer as the pyfunc's output columns (the registered signature's output)."""

    # --- ranking and the gate -----------------------------------------------------------------
    def metric_mode(self, metric: str) -> str:
        return "min" if metric.endswith("loss") or metric in self.lower_is_better else "max"

    def gate_rules(self, gate, evaluation) -> list[tuple[str, bool, str]]:
        """(config key, passed, why) for each absolute rule of `gate` this target has."""
        return []


class ScoredTarget(Target):
    """A target a forward pass answers: logits become outputs (class probabilities, label
    probabilities, a value), outputs become metrics and JSON answers."""

    engine = SCORING

    @abstractmethod
    def label_tensor(self, values, n_labels: int, extras: dict[str, Any]):
        """The shard's `label` values of a batch -> what the loss compares the logits with."""

    @abstractmethod
    def outputs(self, logits: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        """Logits -> what the model says: class probabilities, label probabilities, a value."""

    def truth(self, label_values: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        """What `label_tensor` gave the loss -> the true values metrics compare `outputs` with."""
        return label_values

    @abstractmethod
    def score(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], detailed: bool = False
    ) -> dict[str, Any]:
        """Metrics of `outputs` against `y_true`: {"metrics": {...}, "per_class": {...}, ...}."""

    def plots(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], title: str
    ) -> dict[str, Any]:
        """Matplotlib figures a reviewer would rather look at than a table, by file name."""
        return {}

    # --- distillation -------------------------------------------------------------------------
    @abstractmethod
    def soft_targets(self, outputs: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        """A teacher's `outputs` -> what the student's logits are compared with (`soft_loss`), one
        float vector per row, in the scale of this dataset's `extras`."""

    @abstractmethod
    def soft_loss(self, logits, soft, temperature: float):
        """The batch's summed loss of a student's logits against the teacher's soft targets."""

    # --- serving ------------------------------------------------------------------------------
    @abstractmethod
    def answer(self, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], top_k: int = 1) -> list[dict]:
        """One JSON-able answer per row of `outputs`."""

    @abstractmethod
    def answer_columns(self, answers: list[dict]) -> dict[str, list]:
        """The answers as table columns (batch prediction's output)."""

    def output_example(self, labels: list[str], extras: dict[str, Any]) -> dict[str, list]:
        answers = self.answer(np.full((1, max(1, len(labels))), 0.9), labels, extras)
        return self.answer_columns(answers)

    @abstractmethod
    def answer_model(self):
        """The pydantic model of one answer, for the HTTP API's schema."""

    def observation(self, answer: dict) -> dict[str, Any]:
        """What drift watches of an answer (`raylane.drift`): the label(s) or the value."""
        return {}

    def agrees(self, answer: dict, label: str) -> bool | None:
        """Whether `answer` said the canonical `label` (live accuracy from feedback): the same
        label, or the same set of labels; None where an answer is not right or wrong (a number)."""
        names = self.names(label)
        if not names:
            return None
        said = self.observation(answer).get("label")
        return set(said if isinstance(said, list) else [said]) == set(names)


class Labelled(ScoredTarget):
    """A target with classes: the label set comes from data.labels or from what the data shows."""

    config_keys = frozenset({"data.labels", "gate.min_class_f1"})

    def names(self, label: str) -> list[str]:
        return [label] if label else []

    def label_set(self, seen: set[str], configured: list[str]) -> tuple[str, ...]:
        label_set = tuple(configured) or tuple(sorted(seen))
        if len(label_set) < 2:
            raise ValueError(f"need at least 2 labels to classify, found {list(label_set)}")
        return label_set


class Inputs(ABC):
    """What a row holds and how the model sees it, for every engine: the source columns, a row's
    preparation at ingest, the tokenized shards, the model and its processor, the batches."""

    kind: ClassVar[str]  # how the model card and the manifest name the inputs
    modality: ClassVar[str]
    column: ClassVar[str]  # the shards' (and the pyfunc's) column the model reads
    drift_feature: ClassVar[str]  # what drift watches of an input (`raylane.drift`)
    columns: ClassVar[dict[str, str]]  # the shards' columns and what each holds
    config_keys: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def example(self) -> dict[str, list]:
        """An input example, as the pyfunc's DataFrame columns."""

    def check_model(self, name_or_path: str) -> None:
        """A model the inputs cannot be used with fails here, before Ray starts (a ConfigError)."""
        return None

    def describe(self, data) -> str:
        """The inputs as the model card states them (`data`: the config's data section)."""
        return f"fields {data.text_fields}, at most {data.max_length} tokens; personal data masked: " + (
            ", ".join(data.mask_pii) or "no"
        )

    # --- ingest -------------------------------------------------------------------------------
    @abstractmethod
    def fields(self, data) -> list[str]:
        """The source columns the reader extracts for the inputs, in order (the label follows)."""

    @abstractmethod
    def prepare(
        self, columns: list, spec, errors: list[str], sources: list[str], blobs: list | None = None
    ) -> dict[str, Any]:
        """The input part of a block of reader rows: per row "text" (what a person reads of it),
        "hash" (its content, for dedup and the split), "n_chars", "reason" and "detail" (an input
        problem, or ""), "pii" (counts per kind), and the inputs' own payload columns."""

    @abstractmethod
    def encoder(self, name_or_path: str, max_length: int):
        """(Ray Data task function, its kwargs, actor class, a digest of what it encodes with) to
        tokenize prepared rows (`raylane.tokenize`), or None when nothing is encoded at ingest."""

    @abstractmethod
    def shard_columns(self, batch) -> dict[str, Any]:
        """The payload columns a shard keeps of an encoded batch."""

    @abstractmethod
    def split_stats(self, scan, max_length: int) -> tuple[str, Any]:
        """(manifest field, its value): the account of a split's inputs."""

    # --- model --------------------------------------------------------------------------------
    @abstractmethod
    def load_model(self, name_or_path: str, labels: list[str], target: Target, init: str = "pretrained"): ...

    @abstractmethod
    def load_processor(self, name_or_path: str): ...

    @abstractmethod
    def collate(self, processor, target: Target, n_labels: int, extras: dict[str, Any], pack_width: int = 0):
        """The training batches' collate function; `pack_width` > 0 packs rows into rows of that
        many tokens (`train.packing`, a key only the inputs that can pack own)."""


class ScoredInputs(Inputs):
    """Inputs a scoring model answers from a request: their HTTP request, the checks of its
    items, and how raw items become a model's batch."""

    def raw_preparer(self, model_dir: str):
        """A function that prepares one raw input as ingest prepared the training data."""
        return lambda item: item

    @abstractmethod
    def request_model(self):
        """The pydantic model of a POST /predict body (every string with a length limit)."""

    @abstractmethod
    def upload_request(self, blobs: list[bytes]):
        """A request made of uploaded files, one input each."""

    @abstractmethod
    def items(self, request, limits) -> list:
        """The request's inputs, checked against the deployment's limits (`limits`: the serve
        settings), or a `RequestProblem`."""

    @abstractmethod
    def encode(self, processor, items: list, device) -> tuple[dict[str, Any], np.ndarray]:
        """Prepared items -> model inputs, and one drift feature per item."""

    def sort_key(self, item) -> int:
        """Similar items side by side when scoring in chunks: each chunk pads to its longest."""
        return 0


@dataclass(frozen=True)
class Task:
    name: str
    inputs: Inputs
    target: Target
    description: str = ""

    @property
    def engine(self) -> Engine:
        return self.target.engine

    @property
    def config_keys(self) -> frozenset[str]:
        """The task-specific config keys this task accepts."""
        return self.inputs.config_keys | self.target.config_keys | self.engine.config_keys

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(f"val_{m}" for m in self.target.metrics) + ("val_loss",)

    def compares_with(self, task: str) -> bool:
        """Whether a saved model of `task` is one this task's evaluation scores and compares on
        its headline (see `raylane.tasks.answer_alike`, which asks it both ways)."""
        return task == self.name or task in self.target.rescores

    def resolve_metric(self, metric: str) -> str:
        """train.metric, with "auto" made the target's default."""
        return f"val_{self.target.default_metric}" if metric == "auto" else metric

    def metric_mode(self, metric: str) -> str:
        return self.target.metric_mode(self.resolve_metric(metric).removeprefix("val_"))
