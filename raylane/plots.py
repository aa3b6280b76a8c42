"""The pictures an evaluation logs to MLflow: confusion matrix, precision-recall and ROC curves,
per-label F1, predicted against true values, residuals. Each returns a matplotlib figure (the
caller saves or logs it, then closes it); the numbers behind them come from scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], title: str):
    """Counts in each cell, shaded by the row-normalised rate (rows true, columns predicted)."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(labels))))
    totals = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)
    plt = _pyplot()
    size = max(4.0, 1.1 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix, {title}")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def pr_roc_figure(positives: np.ndarray, score: np.ndarray, positive: str, title: str):
    """Precision-recall on the left, ROC on the right, for the positive class's score."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    precision, recall, _ = precision_recall_curve(positives, score)
    fpr, tpr, _ = roc_curve(positives, score)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.step(recall, precision, where="post")
    left.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"precision-recall ({positive}), AP {average_precision_score(positives, score):.3f}",
    )
    right.plot(fpr, tpr)
    right.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    right.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"ROC ({positive}), AUC {roc_auc_score(positives, score):.3f}",
    )
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def per_label_f1_figure(per_class: dict[str, dict[str, Any]], title: str):
    """One bar per label, its F1, with its support in the label."""
    names = list(per_class)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 2), 4))
    ax.bar(range(len(names)), [per_class[n]["f1"] for n in names], color="tab:blue")
    ax.set_xticks(range(len(names)), [f"{n} ({per_class[n]['support']})" for n in names], rotation=35, ha="right")
    ax.set(ylim=(0, 1.02), ylabel="F1", title=f"Per-label F1, {title}")
    fig.tight_layout()
    return fig


def predicted_vs_true_figure(y_true: np.ndarray, y_pred: np.ndarray, title: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=8, alpha=0.6)
    low, high = float(min(np.min(y_true), np.min(y_pred))), float(max(np.max(y_true), np.max(y_pred)))
    ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="true", ylabel="predicted", title=f"Predicted vs true, {title}")
    fig.tight_layout()
    return fig


def residuals_figure(y_true: np.ndarray, y_pred: np.ndarray, title: str):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    residuals = np.asarray(y_pred) - np.asarray(y_true)
    left.scatter(y_pred, residuals, s=8, alpha=0.6)
    left.axhline(0, linestyle="--", color="grey", linewidth=0.8)
    left.set(xlabel="predicted", ylabel="predicted - true", title="Residuals")
    right.hist(residuals, bins=30, color="tab:blue")
    right.set(xlabel="predicted - true", ylabel="rows", title="Residual distribution")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def rollout_timeline_figure(history: list[dict], title: str):
    """A canary rollout step by step: the challenger's share, requests and p95 per version, and the
    challenger's error rate."""
    plt = _pyplot()
    steps = [entry["step"] for entry in history]
    fig, (share_ax, requests_ax, p95_ax) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    share_ax.bar(steps, [entry["share"] for entry in history], color="tab:orange")
    share_ax.set(ylabel="challenger share, %", title=f"Canary rollout, {title}")
    for role, color in (("champion", "tab:blue"), ("challenger", "tab:orange")):
        requests_ax.plot(steps, [entry[role]["requests"] for entry in history], "o-", color=color, label=role)
        p95_ax.plot(steps, [entry[role]["p95_ms"] for entry in history], "o-", color=color, label=role)
    errors = [entry["challenger"]["errors"] for entry in history]
    for step, count, entry in zip(steps, errors, history):
        requests_ax.annotate(f"{count} errors", (step, entry["challenger"]["requests"]), fontsize=8)
    requests_ax.set(ylabel="requests in the step")
    p95_ax.set(ylabel="p95 latency, ms", xlabel="step")
    requests_ax.legend()
    fig.tight_layout()
    return fig
