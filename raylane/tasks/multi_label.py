"""Several labels per row (text_multilabel): a sigmoid per label, binary cross-entropy, a
threshold per label tuned on the validation split and saved with the model, and micro, macro and
samples F1, per-label F1 and Hamming loss from scikit-learn.

A row's labels come as a JSON list (`["nlp", "mlops"]`) or as one string split on
`data.label_separator`; an empty list is quarantined (`empty_labels`), as is a label outside the
label set (`unknown_label`)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel

from raylane.tasks.base import LABEL_JOIN, LabelCheck, Labelled
from raylane.tasks.single_label import LabelScore
from raylane.text import clean_text

EMPTY_LABELS = "empty_labels"


class LabelsAnswer(BaseModel):
    """Every label whose score reaches its threshold, best first (possibly none)."""

    labels: list[LabelScore]


def parse_labels(raw: str, separator: str = "") -> list[str] | None:
    """The label names in a raw value: a JSON list, else the value split on `separator` (when
    set), else the value as one label. None when a JSON list holds something other than strings."""
    text = raw.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [clean_text(v) for v in parsed] if all(isinstance(v, str) for v in parsed) else None
    parts = text.split(separator) if separator else [text]
    return [clean_text(p) for p in parts]


def tune_thresholds(y_true: np.ndarray, scores: np.ndarray, grid: np.ndarray | None = None) -> list[float]:
    """Per label, the threshold on its score that gives the best F1 on these rows (ties: the
    lowest); 0.5 for a label with no positive row, where F1 is undefined."""
    from sklearn.metrics import f1_score

    grid = np.round(np.arange(0.05, 0.96, 0.05), 2) if grid is None else grid
    thresholds = []
    for j in range(scores.shape[1]):
        if not y_true[:, j].any():
            thresholds.append(0.5)
            continue
        f1s = [f1_score(y_true[:, j], scores[:, j] >= t, zero_division=0) for t in grid]
        thresholds.append(float(grid[int(np.argmax(f1s))]))
    return thresholds


def multi_hot(values, n_labels: int) -> np.ndarray:
    """Rows of label indices (the shards' `label` lists) -> a 0/1 matrix of (rows, n_labels)."""
    out = np.zeros((len(values), n_labels), dtype=np.float32)
    for i, ids in enumerate(values):
        out[i, np.asarray(ids, dtype=np.int64)] = 1.0
    return out


class MultiLabel(Labelled):
    metrics = ("micro_f1", "macro_f1", "samples_f1", "hamming_loss", "subset_accuracy")
    default_metric = "micro_f1"
    lower_is_better = ("hamming_loss",)
    headline = "micro_f1"
    config_keys = Labelled.config_keys | {"data.label_separator", "gate.min_micro_f1"}

    def check_label(self, raw: str | None, separator: str = "") -> LabelCheck:
        if raw is None or not raw.strip():
            return LabelCheck("", "missing_field", "label is missing or empty")
        names = parse_labels(raw, separator)
        if names is None:
            return LabelCheck("", "malformed_row", "the label list holds something other than strings")
        names = sorted({n for n in names if n})
        if not names:
            return LabelCheck("", EMPTY_LABELS, "the label list is empty")
        return LabelCheck(LABEL_JOIN.join(names))

    def names(self, label: str) -> list[str]:
        return label.split(LABEL_JOIN) if label else []

    def encode(self, labels, label_set: list[str]):
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(labels, pa.ChunkedArray):
            labels = labels.combine_chunks()
        lists = pc.split_pattern(labels, LABEL_JOIN)
        ids = pc.index_in(pc.list_flatten(lists), value_set=pa.array(label_set, pa.string())).cast(pa.int32())
        return pa.ListArray.from_arrays(lists.offsets, ids)

    def problem_type(self) -> str:
        return "multi_label_classification"

    def shard_truth(self, values, n_labels: int) -> np.ndarray:
        return multi_hot(values, n_labels).astype(np.int64)

    def label_tensor(self, values, n_labels: int, extras: dict[str, Any]):
        import torch

        return torch.as_tensor(multi_hot(values, n_labels), dtype=torch.float32)

    def loss(self, logits, labels, settings: dict[str, Any]):
        import torch

        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels, reduction="sum")

    def outputs(self, logits: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-logits))

    def soft_targets(self, outputs: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        p = np.clip(outputs, 1e-7, 1 - 1e-7)
        return np.log(p) - np.log1p(-p)  # the teacher's logits

    def soft_loss(self, logits, soft, temperature: float):
        """Per-label cross-entropy against the teacher's tempered probabilities, times T^2 (as
        for one label: the gradient keeps its scale)."""
        import torch

        tempered = torch.sigmoid(soft.float() / temperature)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float() / temperature, tempered, reduction="sum"
        )
        return loss * temperature**2

    def calibrate(self, scored_val) -> dict[str, Any]:
        """A threshold per label, tuned for F1 on the validation split."""
        return {"thresholds": tune_thresholds(*scored_val())}

    def thresholds(self, extras: dict[str, Any], n: int) -> np.ndarray:
        return np.asarray(extras.get("thresholds") or [0.5] * n, dtype=np.float64)

    def score(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], detailed: bool = False
    ) -> dict[str, Any]:
        from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

        y_true = np.asarray(y_true, dtype=np.int64).reshape(-1, len(labels))
        y_pred = (outputs >= self.thresholds(extras, len(labels))).astype(np.int64)
        metrics = (
            {
                f"{avg}_f1": float(f1_score(y_true, y_pred, average=avg, zero_division=0))
                for avg in ("micro", "macro", "samples")
            }
            if len(y_true)
            else {}
        )
        if len(y_true):
            metrics["hamming_loss"] = float(hamming_loss(y_true, y_pred))
            metrics["subset_accuracy"] = float(accuracy_score(y_true, y_pred))
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
        per_class = (
            {
                name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                for i, name in enumerate(labels)
            }
            if len(y_true)
            else {}
        )
        return {"metrics": metrics, "per_class": per_class}

    def answer_columns(self, answers: list[dict]) -> dict[str, list]:
        return {
            "pred_labels": [[x["label"] for x in a["labels"]] for a in answers],
            "scores": [[x["score"] for x in a["labels"]] for a in answers],
        }

    def answer_model(self):
        return LabelsAnswer

    def observation(self, answer: dict) -> dict[str, Any]:
        return {"label": [x["label"] for x in answer["labels"]]}

    def plots(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], title: str
    ) -> dict[str, Any]:
        from raylane.plots import per_label_f1_figure

        per_class = self.score(y_true, outputs, labels, extras)["per_class"]
        return {"per_label_f1.png": per_label_f1_figure(per_class, title)}

    def gate_rules(self, gate, evaluation) -> list[tuple[str, bool, str]]:
        from raylane.tasks.single_label import _class_floor

        rules = []
        micro = evaluation.metrics["micro_f1"]
        if gate.min_micro_f1:
            ok = micro >= gate.min_micro_f1
            rules.append(
                (
                    "gate.min_micro_f1",
                    ok,
                    f"test micro F1 {micro:.4f} {'>=' if ok else '<'} gate.min_micro_f1 {gate.min_micro_f1}",
                )
            )
        return rules + _class_floor(gate, evaluation, "label")

    def answer(self, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], top_k: int = 1) -> list[dict]:
        cut = self.thresholds(extras, len(labels))
        answers = []
        for row in outputs:
            over = [i for i in np.argsort(-row) if row[i] >= cut[i]]
            answers.append({"labels": [{"label": labels[i], "score": float(row[i])} for i in over]})
        return answers
