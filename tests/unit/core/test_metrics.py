import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from raylane.metrics import confusion_matrix, summarize


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n_classes = 4
    y_true = rng.integers(0, n_classes, 300)
    # Mostly right, with one class never predicted to exercise zero division.
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, n_classes - 1, 300))
    labels = [f"c{i}" for i in range(n_classes)]
    cm = confusion_matrix(y_true, y_pred, n_classes)
    assert (cm == sk_confusion_matrix(y_true, y_pred, labels=range(n_classes))).all()
    s = summarize(cm, labels)
    assert s["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        assert s[f"{avg}_precision"] == pytest.approx(p)
        assert s[f"{avg}_recall"] == pytest.approx(r)
        assert s[f"{avg}_f1"] == pytest.approx(f)
    per_class = f1_score(y_true, y_pred, average=None, zero_division=0)
    assert [s["per_class"][name]["f1"] for name in labels] == pytest.approx(list(per_class))


def test_matrices_add_up_across_shards():
    rng = np.random.default_rng(7)
    y_true, y_pred = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    whole = confusion_matrix(y_true, y_pred, 3)
    halves = confusion_matrix(y_true[:37], y_pred[:37], 3) + confusion_matrix(y_true[37:], y_pred[37:], 3)
    assert (whole == halves).all()
