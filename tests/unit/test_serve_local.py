"""The Serve app's logic in Serve's local testing mode (in-process, no cluster, no HTTP)."""

import pytest
from fastapi import HTTPException
from ray import serve

from raylane.predictor import Predictor
from serve.app import PredictRequest, ServeArgs, build_app


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tiny_model):
    """The tiny encoder with a 3-label head, saved as an exported model."""
    from raylane.models import load_classifier, load_tokenizer

    target = tmp_path_factory.mktemp("exported")
    load_classifier(str(tiny_model), ["alpha", "beta", "gamma"]).save_pretrained(target)
    load_tokenizer(str(tiny_model)).save_pretrained(target)
    return target


def test_predictor_scores_sum_to_one_and_rank_top_k(classifier_dir):
    predictor = Predictor(str(classifier_dir))
    out = predictor.predict(["a text", "another one"], top_k=3)
    assert len(out) == 2
    for row in out:
        scores = [x["score"] for x in row["top_k"]]
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert scores == sorted(scores, reverse=True)
        assert row["label"] == row["top_k"][0]["label"] and row["label"] in {"alpha", "beta", "gamma"}


def test_app_predicts_and_enforces_limits(classifier_dir):
    handle = serve.run(
        build_app(ServeArgs(model_uri=str(classifier_dir), tracking_uri="unused", max_texts=2)),
        _local_testing_mode=True,
    )
    response = handle.predict.remote(PredictRequest(texts=["one", "two"], top_k=2)).result()
    assert len(response.predictions) == 2 and len(response.predictions[0].top_k) == 2
    assert handle.healthz.remote().result()["status"] == "ok"
    assert handle.model.remote().result()["labels"] == ["alpha", "beta", "gamma"]
    with pytest.raises(HTTPException) as err:
        handle.predict.remote(PredictRequest(texts=["1", "2", "3"])).result()
    assert err.value.status_code == 413


def test_app_limits_text_length_by_rejecting_or_truncating(classifier_dir):
    args = dict(model_uri=str(classifier_dir), max_chars=10)
    strict = serve.run(build_app(ServeArgs(**args)), _local_testing_mode=True)
    with pytest.raises(HTTPException) as err:
        strict.predict.remote(PredictRequest(texts=["short", "x" * 11])).result()
    assert err.value.status_code == 422 and "[1]" in err.value.detail
    lenient = serve.run(build_app(ServeArgs(**args, on_too_long="truncate")), _local_testing_mode=True)
    response = lenient.predict.remote(PredictRequest(texts=["short", "x" * 11])).result()
    assert len(response.predictions) == 2
    assert len({p.prediction_id for p in response.predictions}) == 2  # one id per prediction


def test_feedback_is_validated_and_written_where_ingest_reads_it(classifier_dir, tmp_path):
    import json

    from serve.app import FeedbackRequest

    sink = tmp_path / "feedback"
    handle = serve.run(build_app(ServeArgs(model_uri=str(classifier_dir), feedback_uri=str(sink))),
                       _local_testing_mode=True)
    stored = handle.feedback.remote(FeedbackRequest(text="a text", label="beta", prediction_id="p1")).result()
    (written,) = sink.glob("feedback-*.jsonl")
    assert stored["stored"].endswith(written.name)
    record = json.loads(written.read_text())
    assert (record["text"], record["label"], record["prediction_id"]) == ("a text", "beta", "p1")
    with pytest.raises(HTTPException) as err:
        handle.feedback.remote(FeedbackRequest(text="a text", label="delta")).result()
    assert err.value.status_code == 422 and "delta" in err.value.detail
    assert len(list(sink.glob("feedback-*"))) == 1  # nothing written for the rejected one

    off = serve.run(build_app(ServeArgs(model_uri=str(classifier_dir))), _local_testing_mode=True)
    with pytest.raises(HTTPException) as err:
        off.feedback.remote(FeedbackRequest(text="a text", label="beta")).result()
    assert err.value.status_code == 404
