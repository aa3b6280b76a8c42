"""Evaluate, gate and register against a real MLflow server, then serve the champion over real HTTP."""

import dataclasses
import time
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from raylane.evaluate.promote import promote, score_champion
from raylane.evaluate.stage import run_evaluation
from raylane.http import free_port
from raylane.registry import resolve_model
from raylane.serve.deploy import APP_NAME, deploy
from raylane.serve.loadtest import run_load
from raylane.tracking import start_run
from tests.prometheus import metrics_port, scrape, total, wait_for


@pytest.fixture(scope="module")
def registry_cfg(smoke_cfg_factory, mlflow_server):
    return smoke_cfg_factory(
        f"tracking.uri={mlflow_server}",
        "tracking.experiment=registry-test",
        "model.registered_name=serve-test",
        "resources.num_workers=0",
        "train.epochs=2",
        "evaluate.slices=[{name: short, max_words: 12}, {name: learning, contains: learning}]",
        f"serve.port={free_port()}",
    )


@pytest.fixture(scope="module")
def trained(trained_classifier):
    return trained_classifier  # the session's tiny classifier (2 epochs in local mode)


@pytest.fixture(scope="module")
def evaluation(registry_cfg, smoke_dataset, trained, tmp_path_factory):
    with start_run(registry_cfg, "evaluate") as run:
        result = run_evaluation(registry_cfg, trained.model_dir, smoke_dataset, tmp_path_factory.mktemp("eval"), run)
    client = MlflowClient(registry_cfg.tracking.uri)
    assert client.get_run(run.run_id).data.metrics["test_weighted_f1"] == pytest.approx(result.weighted_f1)
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"confusion_matrix.png", "per_class.json", "evaluation.json"} <= artifacts
    assert client.get_run(run.run_id).data.metrics["test_slice_short_rows"] == result.slices["short"].rows
    return result


def test_evaluation_covers_the_whole_test_split(evaluation, smoke_dataset):
    support = sum(row.support for row in evaluation.per_class.values())
    assert support == evaluation.rows == smoke_dataset.manifest.splits["test"]
    texts = smoke_dataset.read_split("test").select_columns(["text"]).to_pandas()["text"]
    assert evaluation.slices["short"].rows == sum(len(t.split()) <= 12 for t in texts) > 0
    assert evaluation.slices["learning"].rows == sum("learning" in t.lower() for t in texts) > 0


def test_int8_serving_variant_is_scored_and_its_cost_recorded(
    registry_cfg, smoke_dataset, trained, evaluation, tmp_path_factory
):
    from raylane.predictor import Predictor

    cfg = dataclasses.replace(registry_cfg, serve=dataclasses.replace(registry_cfg.serve, quantize="int8"))
    with start_run(cfg, "evaluate") as run:
        result = run_evaluation(cfg, trained.model_dir, smoke_dataset, tmp_path_factory.mktemp("eval-int8"), run)
    variant = result.serving_variant
    assert result.metrics["accuracy"] == pytest.approx(evaluation.metrics["accuracy"])  # fp32 scores unchanged
    # Recomputed here from the int8 model itself: the recorded figure is what that model scores.
    test = smoke_dataset.read_split("test").select_columns(["text", "label"]).to_pandas()
    int8 = Predictor(trained.model_dir, quantize="int8")
    names = smoke_dataset.label_names
    predicted = [names.index(p["label"]) for p in int8.predict(list(test["text"]))]
    # Dynamic quantization scales activations per batch, so a text's int8 scores depend a little on
    # the texts batched with it: allow a row or two of the 191 to fall the other way.
    accuracy = variant.metrics["accuracy"]
    assert accuracy == pytest.approx((test["label"].to_numpy() == predicted).mean(), abs=2.5 / len(test))
    assert variant.variant == "int8"
    delta = variant.delta_points["accuracy"]
    assert delta == pytest.approx(100 * (accuracy - result.metrics["accuracy"]), abs=1e-3)
    recorded = MlflowClient(cfg.tracking.uri).get_run(run.run_id).data
    assert recorded.metrics["test_serving_accuracy_delta_points"] == pytest.approx(delta)
    assert recorded.tags["serving_variant"] == "int8"


@pytest.fixture(scope="module")
def untrained(smoke_dataset, tiny_model, tmp_path_factory):
    """The tiny encoder with a fresh random head: a model the trained one must beat."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = smoke_dataset.label_names
    target = tmp_path_factory.mktemp("untrained")
    AutoModelForSequenceClassification.from_pretrained(
        tiny_model,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    ).save_pretrained(target)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(target)
    return str(target)


def test_gate_promotes_on_evidence_and_moves_aliases(
    registry_cfg, smoke_dataset, trained, evaluation, untrained, tmp_path
):
    cfg = dataclasses.replace(registry_cfg, model=dataclasses.replace(registry_cfg.model, registered_name="gate-test"))
    client = MlflowClient(cfg.tracking.uri)

    def gate(candidate_dir, candidate_eval, gate_cfg=cfg):
        with start_run(gate_cfg, "register") as run:
            champion = score_champion(gate_cfg, smoke_dataset, run.tracking_uri, tmp_path / "champion")
            return promote(gate_cfg, run, candidate_dir, smoke_dataset, candidate_eval, champion), run

    def alias(name):
        return client.get_model_version_by_alias("gate-test", name).version

    weak = run_evaluation(cfg, untrained, smoke_dataset, tmp_path / "weak")
    assert weak.weighted_f1 < evaluation.weighted_f1 - 0.05, "the trained model must clearly beat a random head"

    # 1. No champion yet: the weak model passes (no rule to fail) and becomes champion.
    first, _ = gate(untrained, weak)
    assert first.decision.passed and first.alias == "champion" and alias("champion") == first.version.version

    # 2. An absolute threshold fails: registered as rejected, the champion stays.
    strict = dataclasses.replace(cfg, gate=dataclasses.replace(cfg.gate, min_weighted_f1=0.999))
    rejected, _ = gate(trained.model_dir, evaluation, strict)
    assert not rejected.decision.passed and rejected.alias == "rejected"
    assert [r.key for r in rejected.decision.rules if not r.passed] == ["gate.min_weighted_f1"]
    assert alias("rejected") == rejected.version.version and alias("champion") == first.version.version

    # 3. Better than the (re-scored) champion: promoted; the old champion becomes previous.
    better, run = gate(trained.model_dir, evaluation)
    assert better.decision.passed, better.decision.reasons
    regression = next(r for r in better.decision.rules if r.key == "gate.max_regression")
    assert f"champion version {first.version.version}" in regression.detail
    assert alias("champion") == better.version.version and alias("previous") == first.version.version
    metrics = client.get_run(run.run_id).data.metrics
    assert metrics["champion_test_weighted_f1"] == pytest.approx(weak.weighted_f1)  # re-scored, same test split

    # 4. Worse than the champion: rejected against it, nothing moves but the rejected alias.
    worse, run = gate(untrained, weak)
    assert not worse.decision.passed
    assert [r.key for r in worse.decision.rules if not r.passed] == ["gate.max_regression"]
    assert alias("champion") == better.version.version and alias("previous") == first.version.version
    assert alias("rejected") == worse.version.version

    version = client.get_model_version("gate-test", worse.version.version)
    assert version.tags["gate"] == "fail" and version.tags["dataset_digest"] == smoke_dataset.digest
    assert version.tags["register_run_id"] == run.run_id
    assert "## Gate: rejected" in version.description and "gate.max_regression" in version.description
    report = client.download_artifacts(run.run_id, "gate.json", str(tmp_path))
    assert '"passed": false' in open(report).read()
    card = resolve_model(f"models:/gate-test/{worse.version.version}", cfg.tracking.uri).model_dir + "/README.md"
    assert "## Test metrics" in open(card).read()

    # 5. Under serve.rollout: canary, a model that passes becomes the challenger (the serving app
    # walks it to champion, tests/integration/serve/test_canary.py); nothing else moves yet.
    canary = dataclasses.replace(cfg, serve=dataclasses.replace(cfg.serve, rollout="canary"))
    walking, _ = gate(trained.model_dir, evaluation, canary)
    assert walking.decision.passed and walking.alias == "challenger"
    assert alias("challenger") == walking.version.version
    assert alias("champion") == better.version.version and alias("previous") == first.version.version


KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(registry_cfg, ray_session, trained, evaluation, smoke_dataset, tmp_path_factory):
    from ray import serve

    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "keys").write_text(f"other-key\n{KEY}\n")
    (secrets / "feedback-secret").write_text("signing-secret-for-tests\n")
    cfg = dataclasses.replace(
        registry_cfg,
        serve=dataclasses.replace(
            registry_cfg.serve,
            api_keys_file=str(secrets / "keys"),
            max_chars=200,
            poll_interval_s=1.0,
            feedback=True,
            feedback_uri=str(tmp_path_factory.mktemp("feedback")),
            feedback_secret_file=str(secrets / "feedback-secret"),
            feedback_flush_s=0.5,
        ),
    )
    with start_run(cfg, "register") as run:
        reg = promote(cfg, run, trained.model_dir, smoke_dataset, evaluation)
    url = deploy(cfg, "models:/serve-test@champion")
    yield url, reg.version.version, cfg
    serve.shutdown()


def test_http_predict_returns_labels_scores_and_version(served, smoke_dataset):
    url, version, _ = served
    body = requests.post(
        f"{url}/predict", json={"texts": ["a vision paper", "a language model"], "top_k": 2}, headers=AUTH, timeout=30
    ).json()
    assert body["model_version"] == version
    assert len(body["predictions"]) == 2
    for p in body["predictions"]:
        assert p["label"] in smoke_dataset.label_names and 0 < p["score"] <= 1
        assert len(p["top_k"]) == 2 and p["prediction_id"]
    assert requests.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"  # open to probes
    assert requests.get(f"{url}/model", headers=AUTH, timeout=30).json()["version"] == version
    # With keys set the API's docs are private unless serve.public_docs=true (issue 27).
    assert requests.get(f"{url}/docs", timeout=30).status_code == 401
    assert requests.get(f"{url}/docs", headers=AUTH, timeout=30).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": KEY}])
def test_missing_or_wrong_keys_get_401_before_the_body_is_read(served, headers):
    url, _, _ = served
    for method, path, body in (
        ("post", "/predict", {"texts": ["x"]}),
        ("post", "/predict", {}),  # a body that would be a 422: the key is checked first
        ("post", "/predict", "not even json"),
        ("get", "/model", None),
        ("post", "/feedback", {"text": "x", "label": "mlops"}),
    ):
        response = requests.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)
        assert response.status_code == 401 and response.json() == {"detail": "unauthorized"}, path
        assert response.headers["www-authenticate"] == "Bearer" and KEY not in response.text


def _replica_rss() -> int:
    import psutil

    from tests.integration.serve.replicas import replica_pids

    return sum(psutil.Process(pid).memory_info().rss for pid in replica_pids())


def _send_huge_body(url: str, total_mb: int, declare: bool) -> tuple[int | None, int]:
    """POST up to `total_mb` MB to /predict over a raw HTTP connection, declared up front
    (Content-Length) or streamed in chunks; stop as soon as the server answers. Returns (status,
    MB sent)."""
    import http.client
    import select
    from urllib.parse import urlparse

    host = urlparse(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    conn.putrequest("POST", "/predict")
    conn.putheader("Authorization", f"Bearer {KEY}")
    conn.putheader("Content-Type", "application/json")
    if declare:
        conn.putheader("Content-Length", str(total_mb * 2**20))
    else:
        conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk, sent = b'["' + b"x" * (2**20 - 4) + b'",', 0
    try:
        while sent < total_mb:
            if select.select([conn.sock], [], [], 0)[0]:
                break  # the answer came: stop sending
            conn.send(chunk if declare else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += 1
        if not declare and sent >= total_mb:
            conn.send(b"0\r\n\r\n")
        return conn.getresponse().status, sent
    except (BrokenPipeError, ConnectionResetError):
        return None, sent  # closed on us after refusing: no answer to read
    finally:
        conn.close()


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
def test_a_body_of_hundreds_of_megabytes_is_refused_without_the_replica_growing(served, capsys, declare):
    url, _, _ = served
    requests.post(f"{url}/predict", json={"texts": ["warm"]}, headers=AUTH, timeout=30)
    before = _replica_rss()
    status, sent_mb = _send_huge_body(url, 400, declare)
    time.sleep(1)
    grown_mb = (_replica_rss() - before) / 2**20
    with capsys.disabled():
        print(
            f"\n400 MB body ({'declared' if declare else 'chunked'}): answered {status} after {sent_mb} MB sent; "
            f"replica RSS {grown_mb:+.1f} MB"
        )
    assert status in (413, None) and sent_mb < 100  # refused long before the end
    if declare:
        assert grown_mb < 8, f"the replica grew by {grown_mb:.1f} MB"
    else:
        # Ray Serve's replica pulls a request's body from the proxy in a loop of its own
        # (ASGIReceiveProxy.fetch_until_disconnect), whether or not the app reads it, so what the
        # client sent before the 413 reached it is queued in the replica: bounded by the bytes in
        # flight (tens of MB here), not by the body's size.
        assert grown_mb < 1.5 * sent_mb + 8, f"the replica grew by {grown_mb:.1f} MB after {sent_mb} MB sent"
    assert requests.post(f"{url}/predict", json={"texts": ["still here"]}, headers=AUTH, timeout=30).ok


def test_feedback_over_http_is_read_back_by_ingest(served, smoke_dataset, smoke_cfg_factory):
    from raylane.ingest.stage import run_ingest

    url, version, cfg = served
    labels = smoke_dataset.label_names
    port, app = metrics_port(), {"application": APP_NAME, "version": version}
    before = scrape(port, **app)
    posted = [{"text": f"feedback number {i} about {label}", "label": label} for i, label in enumerate(labels * 8)]
    right = 0
    for body in posted:
        prediction = requests.post(f"{url}/predict", json={"texts": [body["text"]]}, headers=AUTH, timeout=30).json()
        body["prediction_id"] = prediction["predictions"][0]["prediction_id"]
        right += prediction["predictions"][0]["label"] == body["label"]
        answer = requests.post(f"{url}/feedback", json=body, headers=AUTH, timeout=30)
        assert answer.status_code == 200 and cfg.serve.feedback_uri not in answer.text  # no server path
    # Live accuracy per version: each feedback compared with what the replica answered.
    feedback = "ray_raylane_version_feedback_total"

    def grown(samples, outcome: str) -> float:
        return total(samples, feedback, outcome=outcome) - total(before, feedback, outcome=outcome)

    after = wait_for(port, lambda s: grown(s, "right") + grown(s, "wrong") >= len(posted), **app)
    assert (grown(after, "right"), grown(after, "wrong")) == (right, len(posted) - right)
    # The text its id was issued for, so that each case fails on its own fault.
    bad = {"text": posted[0]["text"], "label": labels[0], "prediction_id": posted[0]["prediction_id"]}
    for changes, status in (
        ({}, 409),  # a replay: each id is taken once
        ({"text": "another text"}, 422),  # the id was issued for another text
        ({"label": "no-such-tag"}, 422),
        ({"prediction_id": "made-up"}, 422),  # not one this deployment signed
        ({"prediction_id": posted[0]["prediction_id"][:-4] + "0000"}, 422),  # forged signature
        ({"prediction_id": "x" * 1_000_000}, 422),  # a megabyte long: refused by the schema
        ({"extra": "field"}, 422),
    ):
        answer = requests.post(f"{url}/feedback", json={**bad, **changes}, headers=AUTH, timeout=30)
        assert answer.status_code == status, (changes.keys(), answer.text[:200])

    retrain = smoke_cfg_factory(
        f"data.source={cfg.serve.feedback_uri}",
        "data.test_source=",
        "data.text_fields=[text]",
        "data.label_field=label",
    )
    deadline = time.time() + 30  # replicas buffer feedback and write it every serve.feedback_flush_s
    while sum(len(f.read_text().splitlines()) for f in Path(cfg.serve.feedback_uri).rglob("*.jsonl")) < len(posted):
        assert time.time() < deadline, "the feedback was not all written within 30 s"
        time.sleep(0.5)
    result = run_ingest(retrain)
    assert result.dataset.manifest.counts.accepted == len(posted)
    assert sorted(result.dataset.label_names) == sorted(labels)


@pytest.mark.parametrize(
    "payload, status",
    [
        ({"texts": []}, 422),
        ({"texts": "not a list"}, 422),
        ({"texts": [1, 2]}, 422),
        ({"wrong": ["x"]}, 422),
        ({"texts": ["x"], "unknown_field": 1}, 422),  # unknown fields are an error, not ignored
        ({"texts": ["x"], "top_k": 0}, 422),
        ({"texts": ["x"] * 100}, 413),
        ({"texts": ["x" * 201]}, 422),  # over serve.max_chars
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(served, payload, status):
    url, _, _ = served
    response = requests.post(f"{url}/predict", json=payload, headers=AUTH, timeout=30)
    assert response.status_code == status
    assert response.json()["detail"]
    assert requests.post(f"{url}/predict", json={"texts": ["still here"]}, headers=AUTH, timeout=30).status_code == 200


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_schema_driven_fuzzing_finds_no_5xx(served, mode):
    """Requests generated from the app's own OpenAPI schema, conforming (positive) and not
    (negative), for every operation: none may get a 5xx, and the replica keeps answering."""
    url, _, _ = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH)  # docs are private with keys set
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /predict", "POST /feedback", "GET /model", "GET /healthz"}
    seen = []

    @given(data=st.data())
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(data):
        operation = data.draw(st.sampled_from(operations))
        case = data.draw(operation.as_strategy(generation_mode=mode))
        response = case.call(base_url=url, headers=AUTH, timeout=60)
        seen.append(response.status_code)
        assert response.status_code < 500, (operation.label, case.body, response.text[:300])

    check()
    assert len(seen) >= 30
    assert requests.post(f"{url}/predict", json={"texts": ["still here"]}, headers=AUTH, timeout=30).status_code == 200


def test_schema_driven_fuzzing_without_a_key_gets_only_401(served):
    url, _, _ = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH)  # docs are private with keys set
    operations = [result.ok() for result in schema.get_all_operations() if result.ok().path != "/healthz"]
    seen = []

    @given(data=st.data())
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(data):
        operation = data.draw(st.sampled_from(operations))
        case = data.draw(
            operation.as_strategy(generation_mode=data.draw(st.sampled_from(list(schemathesis.GenerationMode))))
        )
        response = case.call(base_url=url, timeout=60)
        seen.append(response.status_code)
        assert response.status_code == 401, (operation.label, case.body, response.text[:300])

    check()
    assert len(seen) >= 30


def test_random_paths_create_no_new_metric_series(served):
    import secrets

    url, _, _ = served
    port, app = metrics_port(), {"application": APP_NAME}

    def routes(samples) -> set[str]:
        return {labels["route"] for name, labels, _ in samples if name == "ray_raylane_requests_total"}

    # The app's own route templates (earlier tests' series may reach the port late: they may appear).
    declared = set(requests.get(f"{url}/openapi.json", headers=AUTH, timeout=30).json()["paths"])
    declared |= {"/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
    with requests.Session() as session:
        statuses = {
            session.get(f"{url}/{secrets.token_hex(8)}", headers=AUTH, timeout=30).status_code for _ in range(1000)
        }
    assert statuses == {404}
    after = routes(wait_for(port, lambda s: "unmatched" in routes(s), **app))
    assert after <= declared | {"unmatched"}, after - declared  # the app's routes, and one for the rest


def test_prometheus_metrics_count_requests_batches_labels_and_drift(served, smoke_dataset):
    """Concurrent requests are scored in shared batches, and what the replica saw is on the node's
    metrics port: requests by route and status, latency, batch sizes, labels, lengths, drift."""
    url, version, _ = served
    port = metrics_port()
    app = {"application": APP_NAME}
    before = scrape(port, **app)
    load = run_load(url, concurrency=16, requests=240, headers=AUTH)
    assert load.ok == 240, load.statuses
    assert requests.post(f"{url}/predict", json={"texts": []}, headers=AUTH, timeout=30).status_code == 422
    assert requests.post(f"{url}/predict", json={"texts": ["x"]}, timeout=30).status_code == 401

    def grew(samples, name, by, **labels):
        return total(samples, name, **labels) - total(before, name, **labels) >= by

    def drift_of(samples) -> dict[str, float]:
        return {labels["feature"]: value for name, labels, value in samples if name == "ray_raylane_drift_psi"}

    # Counters and gauges reach the metrics port in separate exports: wait for both.
    after = wait_for(
        port,
        lambda s: (
            grew(s, "ray_raylane_requests_total", 240, route="/predict", status="200")
            and grew(s, "ray_raylane_requests_total", 1, status="422")
            and grew(s, "ray_raylane_requests_total", 1, status="401")
            and grew(s, "ray_raylane_input_tokens_count", 240)
            and set(drift_of(s)) == {"label", "input_tokens"}
        ),
        **app,
    )
    delta = {
        name: total(after, name) - total(before, name)
        for name in (
            "ray_raylane_requests_total",
            "ray_raylane_batch_size_count",
            "ray_raylane_predictions_total",
            "ray_raylane_input_tokens_count",
            "ray_raylane_request_latency_s_count",
        )
    }
    assert delta["ray_raylane_requests_total"] >= 242, delta
    assert delta["ray_raylane_request_latency_s_count"] >= 242, delta
    assert delta["ray_raylane_predictions_total"] >= 240, delta
    # Batching: the 240 texts went through fewer forward passes than there were requests.
    assert 0 < delta["ray_raylane_batch_size_count"] < 240, delta
    # The labels predicted during this load (an app deployed earlier under the same name, with
    # other labels, may still have its series on the node's metrics port).
    predicted = {labels["label"] for name, labels, _ in after if name == "ray_raylane_predictions_total"}
    labels = {label for label in predicted if grew(after, "ray_raylane_predictions_total", 1, label=label)}
    assert labels and labels <= set(smoke_dataset.label_names)
    drift = drift_of(after)
    assert set(drift) == {"label", "input_tokens"} and all(v >= 0 for v in drift.values())
    assert total(after, "ray_raylane_model_version") == float(version)
    info = requests.get(f"{url}/model", headers=AUTH, timeout=30).json()
    assert info["drift"]["window"] >= 240 and info["variant"] == "fp32"
    print(
        f"240 requests at concurrency 16: p50 {load.percentile_ms(50):.1f} ms, p99 {load.percentile_ms(99):.1f} ms, "
        f"{delta['ray_raylane_batch_size_count']:.0f} forward passes; drift {drift}"
    )


def test_hot_swap_follows_the_champion_without_failing_a_request(served, trained, smoke_dataset, evaluation):
    """Last in this module: it moves the alias the other tests' expectations rest on."""
    import threading

    url, version, cfg = served
    statuses, versions, stop = [], [], threading.Event()

    def stream():
        while not stop.is_set():
            try:
                r = requests.post(f"{url}/predict", json={"texts": ["a stream of requests"]}, headers=AUTH, timeout=30)
                statuses.append(r.status_code)
                versions.append(r.json().get("model_version") if r.ok else None)
            except requests.RequestException as err:
                statuses.append(repr(err))

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(2)
        with start_run(cfg, "register") as run:
            new = promote(cfg, run, trained.model_dir, smoke_dataset, evaluation)
        assert new.decision.passed and new.version.version != version
        deadline = time.time() + 60
        while not versions or versions[-1] != new.version.version:
            assert time.time() < deadline, f"still serving {versions[-1:]} a minute after the alias moved"
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert statuses and all(s == 200 for s in statuses), [s for s in statuses if s != 200][:5]
    assert versions[0] == version and versions[-1] == new.version.version
    # Once swapped, never back: versions only move forward in the stream.
    first_new = versions.index(new.version.version)
    assert set(versions[first_new:]) == {new.version.version}
    print(
        f"hot swap: {len(statuses)} requests, all 200, {versions.count(version)} on v{version} "
        f"then {len(versions) - first_new} on v{new.version.version}"
    )
