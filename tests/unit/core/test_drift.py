"""Drift: PSI, length bins, the sliding window and the reference a model carries."""

import math

import pytest

from raylane.drift import (
    LENGTH_EDGES,
    DriftWindow,
    bin_of,
    histogram,
    length_bin,
    length_histogram,
    psi,
    read_reference,
    reference_from_manifest,
    write_reference,
)
from tests.manifests import make_manifest


def test_psi_is_zero_for_the_same_mix_and_grows_with_the_shift():
    assert psi([50, 30, 20], [5, 3, 2]) == pytest.approx(0.0)  # proportions, not counts, matter
    small = psi([50, 30, 20], [45, 33, 22])
    large = psi([50, 30, 20], [10, 30, 60])
    assert 0 < small < 0.1 < 0.25 < large


def test_psi_matches_the_formula():
    expected, actual = [0.5, 0.5], [0.8, 0.2]
    by_hand = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(expected, actual) == pytest.approx(by_hand)


def test_psi_of_an_unseen_bin_is_large_but_finite_and_empty_input_is_zero():
    value = psi([100, 0], [50, 50])
    assert 1 < value < 100
    assert psi([1, 2], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="bins"):
        psi([1, 2], [1, 2, 3])


@pytest.mark.parametrize(
    "length, expected", [(0, 0), (7, 0), (8, 1), (15, 1), (16, 2), (127, 7), (128, 8), (511, 11), (512, 12), (4096, 12)]
)
def test_length_bins(length, expected):
    assert length_bin(length) == expected
    assert LENGTH_EDGES[expected] <= length


def test_length_histogram_folds_exact_lengths_into_bins():
    counts = [0] * 130
    counts[3], counts[10], counts[12], counts[129] = 2, 1, 4, 5
    hist = length_histogram(counts)
    assert len(hist) == len(LENGTH_EDGES) and sum(hist) == 12
    assert hist[0] == 2 and hist[1] == 5 and hist[8] == 5


MANIFEST = make_manifest(
    labels=["cv", "nlp", "other"],
    class_counts={"train": {"nlp": 60, "cv": 30, "other": 10}, "val": {"nlp": 1}},
    train_histogram=[0, 10, 80, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
)


def test_reference_comes_from_the_training_split_and_travels_with_the_model(tmp_path):
    reference = reference_from_manifest(MANIFEST)
    assert reference["features"]["label"] == {"bins": ["cv", "nlp", "other"], "counts": [30, 60, 10]}
    assert reference["features"]["input_tokens"]["counts"][2] == 80
    write_reference(str(tmp_path), reference)
    assert read_reference(str(tmp_path)) == reference
    assert read_reference(str(tmp_path / "elsewhere")) is None


def test_a_reference_written_before_features_were_named_reads_the_same(tmp_path):
    import json

    (tmp_path / "drift_reference.json").write_text(
        json.dumps(
            {
                "labels": ["cv", "nlp"],
                "label_counts": [3, 7],
                "length_edges": list(LENGTH_EDGES),
                "length_counts": [0, 5, 5] + [0] * 10,
            }
        )
    )
    features = read_reference(str(tmp_path))["features"]
    assert features["label"] == {"bins": ["cv", "nlp"], "counts": [3, 7]}
    assert features["input_tokens"]["counts"][:3] == [0, 5, 5]


def test_window_compares_labels_by_name_and_forgets_old_predictions():
    window = DriftWindow(reference_from_manifest(MANIFEST), ["nlp", "cv", "other"], size=100)
    # The training mix (60 nlp, 30 cv, 10 other) and its lengths (10 / 80 / 10 in bins 1, 2, 3).
    labels = ["nlp"] * 60 + ["cv"] * 30 + ["other"] * 10
    lengths = [10] * 10 + [20] * 80 + [30] * 10
    window.add([{"label": a, "input_tokens": n} for a, n in zip(labels, lengths)])
    assert window.scores() == pytest.approx({"label": 0.0, "input_tokens": 0.0}, abs=1e-9)
    window.add([{"label": "other", "input_tokens": 300}] * 100)  # the window now holds only these
    assert len(window.window) == 100
    assert all(v > 1 for v in window.scores().values())


def test_several_labels_per_prediction_and_features_the_reference_lacks():
    window = DriftWindow({"features": {"label": {"bins": ["a", "b"], "counts": [1, 1]}}}, ["a", "b"])
    window.add([{"label": ["a", "b"], "brightness": 0.5}, {"label": ["a", "b"], "brightness": 0.7}])
    assert set(window.scores()) == {"label"} and window.scores()["label"] == pytest.approx(0.0)


def test_a_value_is_binned_over_the_training_range():
    assert histogram([0.5, 1.5, 1.9, 99.0, -5.0], [0.0, 1.0, 2.0]) == [2, 2, 1]  # below the first edge: bin 0
    assert bin_of(2.0, [0.0, 1.0, 2.0]) == 2


def test_the_running_counts_equal_a_recount_of_the_window():
    """The window keeps its histograms up to date as predictions come and go: after any stream,
    they equal what counting the window from scratch gives."""
    import random

    rng = random.Random(0)
    reference = reference_from_manifest(MANIFEST)
    window = DriftWindow(reference, ["nlp", "cv", "other"], size=50)
    for _ in range(40):
        batch = [
            {"label": rng.choice(["nlp", "cv", "other"]), "input_tokens": rng.randrange(0, 600)}
            for _ in range(rng.randrange(1, 9))
        ]
        window.add(batch)
        fresh = DriftWindow(reference, ["nlp", "cv", "other"], size=50)
        fresh.add(list(window.window))
        assert window.scores() == pytest.approx(fresh.scores())
    assert len(window.window) == 50
