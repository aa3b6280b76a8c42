import json
from collections import Counter

import pandas as pd
import pytest

from ingest.transforms import (
    ACCEPTED,
    EMPTY_TEXT,
    MISSING_LABEL,
    UNKNOWN_LABEL,
    assign_split,
    mark_unknown_labels,
    prepare_batch,
    stable_fraction,
)
from raylane.text import clean_text, join_text


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("  hello   world ", "hello world"),
        ("tab\tand\nnewline\r\n", "tab and newline"),
        ("ﬁne ＡＢＣ", "fine ABC"),  # NFKC folds ligatures and full-width letters
        ("bell\x07char", "bell char"),
        (None, ""),
        (float("nan"), ""),
        (42, "42"),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    "parts, text",
    [
        (["Title", "Description here."], "Title. Description here."),
        (["Title", None], "Title"),
        ([None, "  only description "], "only description"),
        (["", "   "], ""),
    ],
)
def test_join_text(parts, text):
    assert join_text(parts) == text


def test_split_is_stable_and_proportional():
    keys = [f"text number {i}" for i in range(20000)]
    first = [assign_split(k, 0.15, 0.1) for k in keys]
    assert first == [assign_split(k, 0.15, 0.1) for k in reversed(keys)][::-1]
    counts = Counter(first)
    assert counts["test"] / len(keys) == pytest.approx(0.10, abs=0.01)
    assert counts["val"] / len(keys) == pytest.approx(0.15, abs=0.01)
    assert all(0 <= stable_fraction(k) < 1 for k in keys[:100])


def test_prepare_batch_quarantines_with_reasons_and_keeps_the_raw_row():
    batch = pd.DataFrame(
        {
            "title": ["Good one", None, "No label", "  "],
            "description": ["with text", None, "here", None],
            "tag": ["nlp", "cv", None, "cv"],
        }
    )
    out = prepare_batch(batch, text_fields=["title", "description"], label_field="tag", val_fraction=0.2,
                        test_fraction=0.0)
    assert list(out["reason"]) == [ACCEPTED, EMPTY_TEXT, MISSING_LABEL, EMPTY_TEXT]
    assert out.loc[0, "text"] == "Good one. with text"
    assert json.loads(out.loc[2, "raw"])["title"] == "No label"
    assert set(out["split"]) <= {"train", "val"}


def test_prepare_batch_forces_the_split_of_a_test_source():
    batch = pd.DataFrame({"t": ["a", "b"], "y": ["x", "y"]})
    out = prepare_batch(batch, text_fields=["t"], label_field="y", val_fraction=0.2, test_fraction=0.0, split="test")
    assert list(out["split"]) == ["test", "test"]


def test_unknown_labels_are_quarantined_and_others_untouched():
    batch = pd.DataFrame({"label": ["a", "z", "b", "z"], "reason": [ACCEPTED, ACCEPTED, EMPTY_TEXT, EMPTY_TEXT]})
    out = mark_unknown_labels(batch, label_names=["a", "b"])
    assert list(out["reason"]) == [ACCEPTED, UNKNOWN_LABEL, EMPTY_TEXT, EMPTY_TEXT]
