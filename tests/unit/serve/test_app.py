"""The Serve app's logic in Serve's local testing mode (in-process, no cluster, no HTTP)."""

import time

import pytest
from fastapi import HTTPException
from ray import serve

from raylane.predictor import Predictor
from raylane.serve.app import ServeArgs, build_app
from raylane.serve.scoring import PredictRequest


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


def test_predictor_batches_by_length_but_answers_in_the_order_asked(classifier_dir):
    import numpy as np

    predictor = Predictor(str(classifier_dir))
    texts = ["a much longer text than the others, with many more words in it", "short", "", "medium length text"] * 3
    together, lengths = predictor.scores(texts, batch_size=4)
    alone = np.concatenate([predictor.scores([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert list(lengths) == [len(predictor.tokenizer(t)["input_ids"]) for t in texts]


def test_app_predicts_and_enforces_limits(classifier_dir):
    handle = serve.run(
        build_app(ServeArgs(model_uri=str(classifier_dir), tracking_uri="unused", max_texts=2)),
        _local_testing_mode=True,
    )
    response = handle.predict.remote(PredictRequest(texts=["one", "two"], top_k=2)).result()
    assert len(response["predictions"]) == 2 and len(response["predictions"][0]["top_k"]) == 2
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
    assert len(response["predictions"]) == 2
    assert len({p["prediction_id"] for p in response["predictions"]}) == 2  # one id per prediction


def test_feedback_takes_only_signed_ids_once_masks_pii_and_lands_in_a_partition(classifier_dir, tmp_path):
    import json

    from raylane.serve.scoring import FeedbackRequest

    sink, secret = tmp_path / "feedback", tmp_path / "secret"
    secret.write_text("a-signing-secret\n")
    args = dict(
        model_uri=str(classifier_dir),
        feedback=True,
        feedback_uri=str(sink),
        feedback_secret_file=str(secret),
        feedback_flush_s=0.2,
    )
    handle = serve.run(build_app(ServeArgs(**args)), _local_testing_mode=True)
    text = "mail me at jo@example.com"
    predictions = handle.predict.remote(PredictRequest(texts=[text, "a text"])).result()["predictions"]
    issued, for_another_text = (p["prediction_id"] for p in predictions)
    with pytest.raises(HTTPException) as err:  # an id for one text does not carry another
        handle.feedback.remote(FeedbackRequest(text=text, label="beta", prediction_id=for_another_text)).result()
    assert err.value.status_code == 422 and "for this text" in err.value.detail
    with pytest.raises(HTTPException) as err:  # checked before the id is used up
        handle.feedback.remote(FeedbackRequest(text=text, label="delta", prediction_id=issued)).result()
    assert err.value.status_code == 422 and "delta" in err.value.detail
    stored = handle.feedback.remote(FeedbackRequest(text=text, label="beta", prediction_id=issued)).result()
    assert stored == {"accepted": True, "prediction_id": issued}  # and no server path
    with pytest.raises(HTTPException) as err:  # replayed
        handle.feedback.remote(FeedbackRequest(text=text, label="gamma", prediction_id=issued)).result()
    assert err.value.status_code == 409 and "once" in err.value.detail
    nonce, expiry, signature = issued.split(".")
    for forged in (
        "p1",
        issued[:-1] + ("0" if issued[-1] != "0" else "1"),
        "0" * 24 + "." + "0" * 32,
        f"{nonce}.{signature}",
        f"{nonce}.{int(expiry) + 1}.{signature}",
    ):
        with pytest.raises(HTTPException) as err:
            handle.feedback.remote(FeedbackRequest(text=text, label="beta", prediction_id=forged)).result()
        assert err.value.status_code == 422 and "prediction_id" in err.value.detail

    deadline = time.time() + 10
    while not list(sink.rglob("feedback-*.jsonl")):  # buffered, then written by the periodic flush
        assert time.time() < deadline, "feedback was not flushed within 10 s"
        time.sleep(0.1)
    (written,) = sink.rglob("feedback-*.jsonl")  # the replay left nothing
    assert written.parent.name.startswith("replica=") and written.parent.parent.name.startswith("date=")
    record = json.loads(written.read_text())
    assert (record["text"], record["label"], record["prediction_id"]) == ("mail me at [EMAIL]", "beta", issued)
    assert not [p for p in sink.rglob("*") if p.name.startswith(".")]  # no temporary file left

    off = serve.run(build_app(ServeArgs(model_uri=str(classifier_dir))), _local_testing_mode=True)
    with pytest.raises(HTTPException) as err:
        off.feedback.remote(FeedbackRequest(text="a text", label="beta", prediction_id=for_another_text)).result()
    assert err.value.status_code == 404


def test_feedback_quota_and_signed_ids(tmp_path):
    from raylane.serve.feedback import FeedbackSink, PredictionIds, QuotaExceeded

    ids, other = PredictionIds(b"one secret"), PredictionIds(b"another secret")
    issued = ids.issue("a text")
    assert ids.valid(issued, "a text") and not other.valid(issued, "a text")
    assert not PredictionIds(None).valid(issued, "a text")
    assert not ids.valid(issued + "x", "a text") and not ids.valid("", "a text") and not ids.valid("x" * 200, "a text")
    sink = FeedbackSink(str(tmp_path), max_bytes=300, flush_s=60)
    sink.add({"text": "x" * 100})
    sink.add({"text": "y" * 100})
    with pytest.raises(QuotaExceeded):
        sink.add({"text": "z" * 100})
    assert sink.flush() == 2 and sink.flush() == 0
    sink.close()


def test_deployment_options_fixed_or_autoscaled():
    from raylane.serve.args import deployment_options

    fixed = deployment_options(
        ServeArgs(model_uri="m", num_replicas=2, max_batch_size=32, max_ongoing_requests=8, replica_cpus=0.5)
    )
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["max_ongoing_requests"] == 32  # never fewer than a full batch
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5}
    scaled = deployment_options(
        ServeArgs(model_uri="m", num_replicas=1, max_replicas=4, target_ongoing_requests=8, replica_gpus=1)
    )
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"]["min_replicas"] == 1 and scaled["autoscaling_config"]["max_replicas"] == 4
    assert scaled["autoscaling_config"]["target_ongoing_requests"] == 8
    assert scaled["ray_actor_options"]["num_gpus"] == 1


def test_model_info_reports_the_variant_and_drift_against_the_training_mix(classifier_dir, tmp_path):
    import shutil

    from raylane.drift import LENGTH_EDGES, write_reference

    model = tmp_path / "model"
    shutil.copytree(classifier_dir, model)
    # Training saw only 'alpha' texts of 8-15 tokens: whatever the random head predicts now drifts
    # in the label mix, unless it happens to say 'alpha' to everything.
    write_reference(
        str(model),
        {
            "labels": ["alpha", "beta", "gamma"],
            "label_counts": [100, 0, 0],
            "length_edges": list(LENGTH_EDGES),
            "length_counts": [0, 100] + [0] * (len(LENGTH_EDGES) - 2),
        },
    )
    handle = serve.run(
        build_app(ServeArgs(model_uri=str(model), quantize="int8", drift_window=50)), _local_testing_mode=True
    )
    texts = [f"number {i}" for i in range(30)]
    response = handle.predict.remote(PredictRequest(texts=texts)).result()
    predicted = [p["label"] for p in response["predictions"]]
    info = handle.model.remote().result()
    assert info["variant"] == "int8" and info["task"] == "text_classification"
    assert info["drift"]["window"] == 30
    # "number 7" is 4 tokens with [CLS]/[SEP]: bin 0, which training never saw.
    assert info["drift"]["psi"]["input_tokens"] > 1
    assert (info["drift"]["psi"]["label"] > 1) == (set(predicted) != {"alpha"})


def test_serve_args_take_the_configs_settings_types_and_checks(tmp_path):
    """`serve deploy` reads ServeArgs, the pipeline reads ServeConfig: ServeArgs is derived from
    ServeConfig, so both take the same settings and refuse the same values with the same words."""
    import pydantic

    from raylane.config import ConfigError, ServeConfig, load_config
    from raylane.serve.deploy import serve_args

    with pytest.raises(ConfigError) as from_config:
        ServeConfig(num_replicas=3, max_replicas=2)
    with pytest.raises(pydantic.ValidationError) as from_args:
        ServeArgs(model_uri="m", num_replicas=3, max_replicas=2)
    assert str(from_config.value) in str(from_args.value)
    with pytest.raises(pydantic.ValidationError, match="quantize"):
        ServeArgs(model_uri="m", quantize="int4")
    with pytest.raises(pydantic.ValidationError, match="port"):
        ServeArgs(model_uri="m", port=8000)  # where the proxy listens is the pipeline's, not the app's

    cfg = load_config(None, [f"output_dir={tmp_path}", "serve.max_batch_size=7", "serve.quantize=int8"])
    args = serve_args(cfg)
    assert (args.max_batch_size, args.quantize, args.replica_cpus) == (7, "int8", cfg.serve.replica_cpus)
    assert args.model_uri == cfg.serve_model_uri and args.feedback_uri == str(cfg.output_path / "feedback")
