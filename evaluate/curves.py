"""Precision-recall and ROC curves for binary tasks, from the positive class's scores.

Computed here with numpy (the formulas of scikit-learn's `precision_recall_curve`, `roc_curve`
and `average_precision_score`, cross-checked in the unit tests) so the pipeline needs no
scikit-learn at run time."""

from __future__ import annotations

from typing import Any

import numpy as np


def _counts_by_threshold(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when predicting positive at or above each distinct score."""
    order = np.argsort(-score, kind="mergesort")
    score, y = score[order], y_true[order].astype(np.float64)
    last_of_each = np.r_[np.flatnonzero(np.diff(score)), y.size - 1]
    tps = np.cumsum(y)[last_of_each]
    fps = (1 + last_of_each) - tps
    return tps, fps, score[last_of_each]


def roc(y_true: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    tps, fps, thresholds = _counts_by_threshold(np.asarray(y_true), np.asarray(score, dtype=np.float64))
    tpr = np.r_[0.0, tps / tps[-1]] if tps[-1] else np.r_[0.0, np.zeros_like(tps)]
    fpr = np.r_[0.0, fps / fps[-1]] if fps[-1] else np.r_[0.0, np.zeros_like(fps)]
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auc": float(np.trapezoid(tpr, fpr))}


def precision_recall(y_true: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    tps, fps, thresholds = _counts_by_threshold(np.asarray(y_true), np.asarray(score, dtype=np.float64))
    precision = tps / (tps + fps)
    recall = tps / tps[-1] if tps[-1] else np.zeros_like(tps)
    # Average precision: precision at each threshold weighted by the recall it adds.
    average_precision = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return {"precision": precision, "recall": recall, "thresholds": thresholds, "average_precision": average_precision}


def plot_curves(y_true: np.ndarray, score: np.ndarray, positive: str, title: str):
    """One figure, PR on the left and ROC on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pr, rc = precision_recall(y_true, score), roc(y_true, score)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.step(pr["recall"], pr["precision"], where="post")
    left.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"precision-recall ({positive}), AP {pr['average_precision']:.3f}",
    )
    right.plot(rc["fpr"], rc["tpr"])
    right.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    right.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"ROC ({positive}), AUC {rc['auc']:.3f}",
    )
    fig.suptitle(title)
    fig.tight_layout()
    return fig
