"""Evaluation numbers cross-checked against scikit-learn on fixed predictions, and slice rules."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from raylane.config import SliceConfig
from raylane.evaluate.report import format_table
from raylane.evaluate.scoring import aligned, evaluate_outputs
from raylane.evaluate.slices import in_slice, membership


def _fixed_outputs(seed: int, n_classes: int, n: int = 400):
    """True labels, and class probabilities that pick the true label about 3 times in 4."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    y_pred = np.where(rng.random(n) < 0.75, y_true, rng.integers(0, n_classes, n))
    probs = rng.random((n, n_classes)) * 0.5
    probs[np.arange(n), y_pred] += 1.0
    return y_true, y_pred, np.round(probs / probs.sum(axis=1, keepdims=True), 2)  # ties, rounded


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_evaluation_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred, probs = _fixed_outputs(seed, 2)
    short = rng.random(y_true.size) < 0.3
    evaluation = evaluate_outputs("text_classification", y_true, probs, {"slice_short": short}, ["neg", "pos"], {})
    m = evaluation.metrics

    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        assert (m[f"{avg}_precision"], m[f"{avg}_recall"], m[f"{avg}_f1"]) == pytest.approx((p, r, f))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y_true, probs[:, 1]))
    assert m["average_precision"] == pytest.approx(average_precision_score(y_true, probs[:, 1]))
    short_slice = evaluation.slices["short"]
    assert short_slice.rows == short.sum()
    assert short_slice.metrics["weighted_f1"] == pytest.approx(
        f1_score(y_true[short], y_pred[short], average="weighted", zero_division=0)
    )
    assert short_slice.metrics["accuracy"] == pytest.approx(accuracy_score(y_true[short], y_pred[short]))
    assert np.array(evaluation.confusion_matrix).sum() == y_true.size == evaluation.rows
    assert "roc_auc" in format_table(evaluation) and "slice short" in format_table(evaluation)


def test_multiclass_has_no_curves_and_an_empty_slice_reports_zero_rows():
    y_true, y_pred, probs = _fixed_outputs(3, 4)
    evaluation = evaluate_outputs(
        "text_classification", y_true, probs, {"slice_none": np.zeros(y_true.size, bool)}, list("abcd"), {}
    )
    assert "roc_auc" not in evaluation.metrics
    assert evaluation.slices["none"].rows == 0 and evaluation.slices["none"].metrics == {}
    assert [evaluation.per_class[c].f1 for c in "abcd"] == pytest.approx(
        list(f1_score(y_true, y_pred, average=None, zero_division=0))
    )
    assert "no rows" in format_table(evaluation)


def test_a_champion_with_another_label_order_is_compared_label_by_label():
    outputs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert aligned(outputs, ["b", "a", "c"], ["a", "b", "c"]).tolist() == [[0.2, 0.7, 0.1], [0.3, 0.1, 0.6]]
    with pytest.raises(ValueError, match="predicts"):
        aligned(outputs, ["a", "b", "x"], ["a", "b", "c"])


@pytest.mark.parametrize(
    "rule, text, expected",
    [
        (SliceConfig(name="s", max_words=3), "three words here", True),
        (SliceConfig(name="s", max_words=3), "four words are here", False),
        (SliceConfig(name="s", min_words=4), "four words are here", True),
        (SliceConfig(name="s", min_words=4), "too short", False),
        (SliceConfig(name="s", contains="YOLO"), "object detection with yolo", True),  # case-insensitive
        (SliceConfig(name="s", contains="bert"), "transformers for text", False),
        (SliceConfig(name="s", contains="bert", max_words=3), "bert fine tuning guide", False),  # all rules
        (SliceConfig(name="s", contains="bert", max_words=4), "bert fine tuning guide", True),
    ],
)
def test_slice_rules(rule, text, expected):
    assert in_slice(text, rule) is expected


def test_membership_gives_one_mask_per_slice():
    rules = [SliceConfig(name="short", max_words=2), SliceConfig(name="gan", contains="gan")]
    masks = membership(["a b", "gans are fun", "long text about nothing"], rules)
    assert list(masks["slice_short"]) == [True, False, False]
    assert list(masks["slice_gan"]) == [False, True, False]
