"""A number per row (text_regression): one output, trained on the target standardised with the
training split's mean and scale (saved with the model, so it answers in the target's units), MSE
or Huber loss (train.loss), and RMSE, MAE, R² and Spearman's rank correlation from scikit-learn
and SciPy. A target that is not a finite number is quarantined (`invalid_target`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel

from raylane.tasks.base import LabelCheck, ScoredTarget

INVALID_TARGET = "invalid_target"


class ValueAnswer(BaseModel):
    """The predicted value, in the target's units."""

    value: float


class Numeric(ScoredTarget):
    metrics = ("rmse", "mae", "r2", "spearman")
    default_metric = "rmse"
    lower_is_better = ("rmse", "mae")
    headline = "rmse"
    config_keys = frozenset({"gate.max_rmse", "train.loss"})

    def check_label(self, raw: str | None, separator: str = "") -> LabelCheck:
        if raw is None or not raw.strip():
            return LabelCheck("", "missing_field", "target is missing or empty")
        try:
            value = float(raw.strip())
        except ValueError:
            return LabelCheck("", INVALID_TARGET, f"target {raw.strip()[:40]!r} is not a number")
        if not math.isfinite(value):
            return LabelCheck("", INVALID_TARGET, f"target {value} is not finite")
        return LabelCheck(repr(value))

    def value_of(self, label: str) -> float | None:
        return float(label)

    def encode(self, labels, label_set: list[str]):
        import pyarrow as pa

        return labels.cast(pa.float64()).cast(pa.float32())

    def num_outputs(self, labels: list[str]) -> int:
        return 1

    def problem_type(self) -> str:
        return "regression"

    def shard_truth(self, values, n_labels: int) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def extras(self, manifest) -> dict[str, Any]:
        """The training split's mean and scale: the model learns the standardised target."""
        train = manifest.target_stats.get("train", {})
        return {"target_mean": float(train.get("mean", 0.0)), "target_scale": float(train.get("std") or 1.0)}

    def label_tensor(self, values, n_labels: int, extras: dict[str, Any]):
        import torch

        return torch.as_tensor(self.standardize(values, extras), dtype=torch.float32)

    def loss(self, logits, labels, settings: dict[str, Any]):
        import torch

        predicted = logits.float().view(-1)
        if settings.get("loss") == "huber":
            return torch.nn.functional.huber_loss(predicted, labels, reduction="sum")
        return torch.nn.functional.mse_loss(predicted, labels, reduction="sum")

    def soft_targets(self, outputs: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        return self.standardize(np.asarray(outputs).reshape(-1), extras).reshape(-1, 1)

    def soft_loss(self, logits, soft, temperature: float):
        """Squared error against the teacher's prediction, standardised as the labels are (a number
        has no distribution to soften: the temperature does not apply)."""
        import torch

        return torch.nn.functional.mse_loss(logits.float().view(-1), soft.float().view(-1), reduction="sum")

    @staticmethod
    def scaling(extras: dict[str, Any]) -> tuple[float, float]:
        return float(extras.get("target_mean", 0.0)), float(extras.get("target_scale", 1.0)) or 1.0

    def standardize(self, values: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        mean, scale = self.scaling(extras)
        return (np.asarray(values, dtype=np.float64) - mean) / scale

    def truth(self, label_values: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        mean, scale = self.scaling(extras)
        return np.asarray(label_values, dtype=np.float64) * scale + mean

    def outputs(self, logits: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
        mean, scale = self.scaling(extras)
        return logits.reshape(len(logits), -1)[:, :1] * scale + mean

    def score(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], detailed: bool = False
    ) -> dict[str, Any]:
        from scipy.stats import spearmanr
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
        y_pred = np.asarray(outputs, dtype=np.float64).reshape(-1)
        if not len(y_true):
            return {"metrics": {}, "per_class": {}}
        rho = spearmanr(y_true, y_pred).statistic if len(y_true) > 1 else float("nan")
        metrics = {
            "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
            "mae": float(mean_absolute_error(y_true, y_pred)),
            "r2": float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
            "spearman": float(rho) if np.isfinite(rho) else 0.0,
        }
        return {"metrics": metrics, "per_class": {}}

    def answer_columns(self, answers: list[dict]) -> dict[str, list]:
        return {"value": [a["value"] for a in answers]}

    def answer_model(self):
        return ValueAnswer

    def observation(self, answer: dict) -> dict[str, Any]:
        return {"value": answer["value"]}

    def plots(
        self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], title: str
    ) -> dict[str, Any]:
        from raylane.plots import predicted_vs_true_figure, residuals_figure

        y_pred = np.asarray(outputs).reshape(-1)
        return {
            "predicted_vs_true.png": predicted_vs_true_figure(y_true, y_pred, title),
            "residuals.png": residuals_figure(y_true, y_pred, title),
        }

    def gate_rules(self, gate, evaluation) -> list[tuple[str, bool, str]]:
        if not gate.max_rmse:
            return []
        rmse = evaluation.metrics["rmse"]
        ok = rmse <= gate.max_rmse
        return [("gate.max_rmse", ok, f"test RMSE {rmse:.4f} {'<=' if ok else '>'} gate.max_rmse {gate.max_rmse}")]

    def answer(self, outputs: np.ndarray, labels: list[str], extras: dict[str, Any], top_k: int = 1) -> list[dict]:
        return [{"value": float(row[0])} for row in np.asarray(outputs).reshape(len(outputs), -1)]
