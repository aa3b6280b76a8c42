"""One label per row (text and image classification): softmax over the classes, cross-entropy,
accuracy and precision/recall/F1 (macro, weighted, per class) from scikit-learn, a confusion
matrix, and for two classes ROC AUC and average precision."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from raylane.tasks.base import LabelCheck, Labelled
from raylane.text import clean_text

MISSING_LABEL = "missing_field"


class LabelScore(BaseModel):
    label: str
    score: float


class ClassAnswer(LabelScore):
    """The best label and its score, and the `top_k` best, best first."""

    top_k: list[LabelScore]


class SingleLabel(Labelled):
    metrics = ("accuracy", "macro_f1", "weighted_f1")
    default_metric = "macro_f1"
    headline = "weighted_f1"
    config_keys = Labelled.config_keys | {"data.stratify", "gate.min_weighted_f1"}

    def check_label(self, raw: str | None, separator: str = "") -> LabelCheck:
        label = clean_text(raw) if raw is not None else ""
        if not label:
            return LabelCheck("", MISSING_LABEL, "label is missing or empty")
        return LabelCheck(label)

    def encode(self, labels, label_set: list[str]):
        import pyarrow as pa
        import pyarrow.compute as pc

        return pc.index_in(labels, value_set=pa.array(label_set, pa.string())).cast(pa.int32())

    def problem_type(self) -> str:
        return "single_label_classification"

    def shard_truth(self, values, n_labels: int) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    def label_tensor(self, values, n_labels: int, extras: dict[str, Any]):
        import torch

        return torch.as_tensor(np.asarray(values, dtype=np.int64))

    def loss(self, logits, labels, settings: dict[str, Any]):
        import torch

        return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")

    def soft_targets(self, outputs: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        # Log-probabilities are the logits up to a constant per row, which no softmax sees.
        return np.log(np.clip(outputs, 1e-12, None))

    def soft_loss(self, logits, soft, temperature: float):
        """Hinton et al.'s soft loss: KL(teacher || student) of the tempered softmaxes, times T^2
        so that its gradient keeps the scale of the plain loss's whatever the temperature."""
        import torch.nn.functional as F

        student = F.log_softmax(logits.float() / temperature, dim=-1)
        teacher = F.log_softmax(soft.float() / temperature, dim=-1)
        return F.kl_div(student, teacher, log_target=True, reduction="sum") * temperature**2

    def outputs(self, logits: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def score(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], detailed: bool = False
    ) -> dict[str, Any]:
        from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

        y_true = np.asarray(y_true, dtype=np.int64)
        y_pred = outputs.argmax(axis=1) if len(outputs) else np.zeros(0, np.int64)
        ids = list(range(len(labels)))
        metrics = {"accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0}
        for average in ("macro", "weighted"):
            p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=average, zero_division=0)
            metrics.update({f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)})
        result: dict[str, Any] = {"metrics": metrics}
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
        result["per_class"] = {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        }
        if detailed:
            result["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=ids).tolist()
            if len(labels) == 2 and len(set(y_true.tolist())) == 2:
                from sklearn.metrics import average_precision_score, roc_auc_score

                metrics["roc_auc"] = float(roc_auc_score(y_true, outputs[:, 1]))
                metrics["average_precision"] = float(average_precision_score(y_true, outputs[:, 1]))
        return result

    def answer_columns(self, answers: list[dict]) -> dict[str, list]:
        return {"pred_label": [a["label"] for a in answers], "score": [a["score"] for a in answers]}

    def answer_model(self):
        return ClassAnswer

    def observation(self, answer: dict) -> dict[str, Any]:
        return {"label": answer["label"]}

    def plots(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], title: str
    ) -> dict[str, Any]:
        from raylane.plots import confusion_matrix_figure, pr_roc_figure

        y_pred = outputs.argmax(axis=1)
        figures = {"confusion_matrix.png": confusion_matrix_figure(y_true, y_pred, labels, title)}
        if len(labels) == 2 and len(set(np.asarray(y_true).tolist())) == 2:
            figures["pr_roc.png"] = pr_roc_figure(np.asarray(y_true) == 1, outputs[:, 1], labels[1], title)
        return figures

    def gate_rules(self, gate, evaluation) -> list[tuple[str, bool, str]]:
        rules = []
        f1 = evaluation.metrics["weighted_f1"]
        if gate.min_weighted_f1:
            ok = f1 >= gate.min_weighted_f1
            rules.append(
                (
                    "gate.min_weighted_f1",
                    ok,
                    f"test weighted F1 {f1:.4f} {'>=' if ok else '<'} gate.min_weighted_f1 {gate.min_weighted_f1}",
                )
            )
        rules += _class_floor(gate, evaluation, "class")
        return rules

    def answer(self, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], top_k: int = 1) -> list[dict]:
        answers = []
        for row in outputs:
            order = np.argsort(-row)[: max(1, top_k)]
            answers.append(
                {
                    "label": labels[order[0]],
                    "score": float(row[order[0]]),
                    "top_k": [{"label": labels[i], "score": float(row[i])} for i in order],
                }
            )
        return answers


def _class_floor(gate, evaluation, what: str) -> list[tuple[str, bool, str]]:
    """gate.min_class_f1: every class's (or label's) F1 at least this."""
    if not gate.min_class_f1 or not evaluation.per_class:
        return []
    name, worst = min(((n, row.f1) for n, row in evaluation.per_class.items()), key=lambda x: x[1])
    ok = worst >= gate.min_class_f1
    return [
        (
            "gate.min_class_f1",
            ok,
            f"lowest {what} F1 {worst:.4f} ({name}) {'>=' if ok else '<'} gate.min_class_f1 {gate.min_class_f1}",
        )
    ]
