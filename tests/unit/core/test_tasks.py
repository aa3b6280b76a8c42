"""Each task, on its own: labels read and checked, metrics equal to scikit-learn's on fixed
outputs, thresholds and target scaling that round-trip, and a loss that falls on a tiny
separable set with a real (tiny, random) model."""

import io
import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import f1_score, hamming_loss, mean_absolute_error, mean_squared_error, r2_score

from raylane.tasks import TASKS, get_task
from raylane.tasks.multi_label import multi_hot, parse_labels, tune_thresholds
from raylane.tasks.saved import SavedTask, read_saved_task
from raylane.train.optim import Precision, accumulate, build_optimizer, build_scheduler, loss_of, optimizer_step

CPU = Precision(torch.device("cpu"), "fp32")  # exact comparisons need fp32
MULTI, NUMERIC = get_task("text_multilabel").target, get_task("text_regression").target


@pytest.mark.parametrize(
    "raw, separator, value, reason",
    [
        ('["nlp", "mlops"]', "", "mlops\x1fnlp", ""),
        ("nlp|mlops|nlp", "|", "mlops\x1fnlp", ""),
        ("nlp", "", "nlp", ""),
        ("[]", "", "", "empty_labels"),
        ("[1, 2]", "", "", "malformed_row"),
        (None, "", "", "missing_field"),
    ],
)
def test_multi_label_values_are_read_as_a_sorted_set(raw, separator, value, reason):
    check = MULTI.check_label(raw, separator)
    assert (check.value, check.reason) == (value, reason)


def test_an_unknown_label_inside_a_list_is_not_known_and_lists_encode_to_ids():
    assert MULTI.known("a\x1fb", frozenset("ab")) and not MULTI.known("a\x1fz", frozenset("ab"))
    encoded = MULTI.encode(pa.array(["a\x1fc", "b", "a\x1fb\x1fc"]), ["a", "b", "c"])
    assert encoded.to_pylist() == [[0, 2], [1], [0, 1, 2]]
    assert multi_hot(encoded.to_pylist(), 3).tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 1]]
    assert parse_labels(' ["x"] ') == ["x"]


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("3.5", ""),
        (" -2 ", ""),
        ("nan", "invalid_target"),
        ("inf", "invalid_target"),
        ("high", "invalid_target"),
        ("", "missing_field"),
    ],
)
def test_a_numeric_target_must_be_a_finite_number(raw, reason):
    assert NUMERIC.check_label(raw).reason == reason


def test_multi_label_metrics_equal_scikit_learn_and_thresholds_are_tuned_per_label():
    rng = np.random.default_rng(0)
    truth = (rng.random((300, 4)) < 0.35).astype(np.int64)
    # Label 3 is only reliable above 0.8: its tuned threshold must move up.
    scores = np.clip(truth * 0.6 + rng.random((300, 4)) * 0.5, 0, 1)
    scores[:, 3] = np.clip(truth[:, 3] * 0.3 + rng.random(300) * 0.6 + 0.25, 0, 1)
    thresholds = tune_thresholds(truth, scores)
    assert len(thresholds) == 4 and thresholds[3] > 0.6
    predicted = (scores >= np.asarray(thresholds)).astype(int)
    m = MULTI.score(truth, scores, list("abcd"), {"thresholds": thresholds})["metrics"]
    for average in ("micro", "macro", "samples"):
        assert m[f"{average}_f1"] == pytest.approx(f1_score(truth, predicted, average=average, zero_division=0))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(truth, predicted))
    default = MULTI.score(truth, scores, list("abcd"), {})["metrics"]
    assert m["micro_f1"] >= default["micro_f1"]  # tuned on these rows: no worse than 0.5 everywhere
    answer = MULTI.answer(scores[:1], list("abcd"), {"thresholds": thresholds})[0]
    assert {x["label"] for x in answer["labels"]} == {n for n, s, t in zip("abcd", scores[0], thresholds) if s >= t}
    assert [x["score"] for x in answer["labels"]] == sorted((x["score"] for x in answer["labels"]), reverse=True)


def test_regression_metrics_equal_scikit_learn_and_the_scale_round_trips():
    rng = np.random.default_rng(1)
    truth = rng.normal(50, 10, 200)
    extras = {"target_mean": 50.0, "target_scale": 10.0}
    standardized = NUMERIC.standardize(truth, extras)
    assert standardized.mean() == pytest.approx(0, abs=0.2)
    assert NUMERIC.outputs(standardized.reshape(-1, 1), extras)[:, 0] == pytest.approx(truth)  # back in units
    assert NUMERIC.truth(standardized, extras) == pytest.approx(truth)
    predicted = truth + rng.normal(0, 3, 200)
    m = NUMERIC.score(truth, predicted.reshape(-1, 1), [], extras)["metrics"]
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(truth, predicted)))
    assert m["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert m["r2"] == pytest.approx(r2_score(truth, predicted))
    assert 0.9 < m["spearman"] <= 1


def test_a_saved_task_round_trips_and_an_old_model_reads_as_a_classifier(tmp_path):
    SavedTask("text_multilabel", ["a", "b"], {"thresholds": [0.3, 0.7]}).write(tmp_path)
    assert read_saved_task(tmp_path) == SavedTask("text_multilabel", ["a", "b"], {"thresholds": [0.3, 0.7]})
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"id2label": {"0": "x", "1": "y"}}))
    assert read_saved_task(old) == SavedTask("text_classification", ["x", "y"])


def _texts_batch(tiny_model, task_name: str):
    task = get_task(task_name)
    processor = task.inputs.load_processor(str(tiny_model))
    texts = [f"the cat sat on mat {i}" for i in range(8)] + [f"rocket engines launch orbit {i}" for i in range(8)]
    enc = processor(texts, padding=True, return_tensors="pt")
    if task_name == "text_multilabel":  # cats: {a}; rockets: {b, c}
        labels, raw = ["a", "b", "c"], [[0]] * 8 + [[1, 2]] * 8
    else:  # a number per group
        labels, raw = [], [1.0] * 8 + [9.0] * 8
    extras = {"target_mean": 5.0, "target_scale": 4.0}
    batch = {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": task.target.label_tensor(raw, len(labels), extras),
    }
    return task, task.inputs.load_model(str(tiny_model), labels, task.target), batch, labels, extras


def _images_batch(tiny_image_model):
    from PIL import Image

    task = get_task("image_classification")
    processor = task.inputs.load_processor(str(tiny_image_model))
    blobs = []
    for i in range(16):
        buffer = io.BytesIO()
        Image.new("L", (8, 8), 20 + i if i < 8 else 230 - i).save(buffer, "PNG")  # dark vs bright
        blobs.append(buffer.getvalue())
    collate = task.inputs.collate(processor, task.target, 2, {})
    batch = collate({"image": np.array(blobs, dtype=object), "label": np.array([0] * 8 + [1] * 8)})
    model = task.inputs.load_model(str(tiny_image_model), ["dark", "bright"], task.target, init="config")
    return task, model, batch, ["dark", "bright"], {}


@pytest.mark.parametrize("task_name", ["text_multilabel", "text_regression", "image_classification"])
def test_the_loss_falls_on_a_tiny_separable_set(task_name, tiny_model, tiny_image_model):
    torch.manual_seed(0)
    if task_name == "image_classification":
        task, model, batch, labels, extras = _images_batch(tiny_image_model)
    else:
        task, model, batch, labels, extras = _texts_batch(tiny_model, task_name)
    optimizer = build_optimizer(model, 3e-3, 0.0)
    scheduler = build_scheduler(optimizer, warmup=2, total=40, schedule="cosine")
    losses = []
    for _ in range(40):
        model.train()
        ((loss_sum, _),) = accumulate(model, [batch], lambda m, b: loss_of(m, b, task, {}, CPU), CPU)
        losses.append(float(loss_sum.detach()) / len(batch["labels"]))
        optimizer_step(model, optimizer, scheduler, CPU, max_grad_norm=1.0)
    assert losses[-1] < 0.3 * losses[0], losses
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.numpy()
    truth = task.target.truth(batch["labels"].numpy(), extras)
    scored = task.target.score(truth, task.target.outputs(logits, extras), labels, extras)["metrics"]
    headline = task.target.headline
    assert scored[headline] < 2.0 if headline == "rmse" else scored[headline] > 0.95, scored


def test_every_task_is_registered_with_its_halves():
    assert set(TASKS) == {
        "text_classification",
        "text_multilabel",
        "text_regression",
        "image_classification",
        "causal_lm",
        "preference",
    }
    for task in TASKS.values():
        assert task.target.default_metric in task.target.metrics and task.resolve_metric("auto") in task.metrics
