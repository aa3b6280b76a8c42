"""Evaluate, gate and register against a real MLflow server, then serve the champion over real HTTP."""

import dataclasses

import pytest
import requests
from mlflow import MlflowClient

from evaluate.gate import register, score_champion
from evaluate.stage import run as evaluate
from raylane.registry import resolve_model
from raylane.tracking import start_run
from serve.deploy import deploy
from tests.conftest import free_port
from train.driver import fit


@pytest.fixture(scope="module")
def registry_cfg(smoke_cfg_factory, mlflow_server):
    return smoke_cfg_factory(f"tracking.uri={mlflow_server}", "tracking.experiment=registry-test",
                             "model.registered_name=serve-test", "resources.num_workers=0", "train.epochs=2",
                             "evaluate.slices=[{name: short, max_words: 12}, {name: learning, contains: learning}]",
                             f"serve.port={free_port()}")


@pytest.fixture(scope="module")
def trained(registry_cfg, smoke_dataset):
    return fit(registry_cfg, smoke_dataset, name="for-registry")


@pytest.fixture(scope="module")
def evaluation(registry_cfg, smoke_dataset, trained, tmp_path_factory):
    with start_run(registry_cfg, "evaluate") as run:
        result = evaluate(registry_cfg, trained.model_dir, smoke_dataset, tmp_path_factory.mktemp("eval"), run)
    client = MlflowClient(registry_cfg.tracking.uri)
    assert client.get_run(run.run_id).data.metrics["test_weighted_f1"] == pytest.approx(result.weighted_f1)
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"confusion_matrix.png", "per_class.json", "evaluation.json"} <= artifacts
    assert client.get_run(run.run_id).data.metrics["test_slice_short_rows"] == result.metrics["slices"]["short"]["rows"]
    return result


def test_evaluation_covers_the_whole_test_split(evaluation, smoke_dataset):
    support = sum(row["support"] for row in evaluation.metrics["per_class"].values())
    assert support == smoke_dataset.manifest["splits"]["test"]
    texts = smoke_dataset.read_split("test").select_columns(["text"]).to_pandas()["text"]
    slices = evaluation.metrics["slices"]
    assert slices["short"]["rows"] == sum(len(t.split()) <= 12 for t in texts) > 0
    assert slices["learning"]["rows"] == sum("learning" in t.lower() for t in texts) > 0


@pytest.fixture(scope="module")
def untrained(smoke_dataset, tiny_model, tmp_path_factory):
    """The tiny encoder with a fresh random head: a model the trained one must beat."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = smoke_dataset.label_names
    target = tmp_path_factory.mktemp("untrained")
    AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    ).save_pretrained(target)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(target)
    return str(target)


def test_gate_promotes_on_evidence_and_moves_aliases(registry_cfg, smoke_dataset, trained, evaluation, untrained,
                                                     tmp_path):
    cfg = dataclasses.replace(registry_cfg, model=dataclasses.replace(registry_cfg.model, registered_name="gate-test"))
    client = MlflowClient(cfg.tracking.uri)

    def gate(candidate_dir, candidate_eval, gate_cfg=cfg):
        with start_run(gate_cfg, "register") as run:
            champion = score_champion(gate_cfg, smoke_dataset, run.tracking_uri, tmp_path / "champion")
            return register(gate_cfg, run, candidate_dir, smoke_dataset, candidate_eval.metrics, champion), run

    def alias(name):
        return client.get_model_version_by_alias("gate-test", name).version

    weak = evaluate(cfg, untrained, smoke_dataset, tmp_path / "weak")
    assert weak.weighted_f1 < evaluation.weighted_f1 - 0.05, "the trained model must clearly beat a random head"

    # 1. No champion yet: the weak model passes (no rule to fail) and becomes champion.
    first, _ = gate(untrained, weak)
    assert first.decision.passed and first.alias == "champion" and alias("champion") == first.version.version

    # 2. An absolute threshold fails: registered as challenger, the champion stays.
    strict = dataclasses.replace(cfg, gate=dataclasses.replace(cfg.gate, min_weighted_f1=0.999))
    rejected, _ = gate(trained.model_dir, evaluation, strict)
    assert not rejected.decision.passed and rejected.alias == "challenger"
    assert [r.key for r in rejected.decision.rules if not r.passed] == ["gate.min_weighted_f1"]
    assert alias("challenger") == rejected.version.version and alias("champion") == first.version.version

    # 3. Better than the (re-scored) champion: promoted; the old champion becomes previous.
    better, run = gate(trained.model_dir, evaluation)
    assert better.decision.passed, better.decision.reasons
    regression = next(r for r in better.decision.rules if r.key == "gate.max_regression")
    assert f"champion version {first.version.version}" in regression.detail
    assert alias("champion") == better.version.version and alias("previous") == first.version.version
    metrics = client.get_run(run.run_id).data.metrics
    assert metrics["champion_test_weighted_f1"] == pytest.approx(weak.weighted_f1)  # re-scored, same test split

    # 4. Worse than the champion: rejected against it, nothing moves but the challenger alias.
    worse, run = gate(untrained, weak)
    assert not worse.decision.passed
    assert [r.key for r in worse.decision.rules if not r.passed] == ["gate.max_regression"]
    assert alias("champion") == better.version.version and alias("previous") == first.version.version
    assert alias("challenger") == worse.version.version

    version = client.get_model_version("gate-test", worse.version.version)
    assert version.tags["gate"] == "fail" and version.tags["dataset_digest"] == smoke_dataset.digest
    assert version.tags["register_run_id"] == run.run_id
    assert "## Gate: rejected" in version.description and "gate.max_regression" in version.description
    report = client.download_artifacts(run.run_id, "gate.json", str(tmp_path))
    assert '"passed": false' in open(report).read()
    card = resolve_model(f"models:/gate-test/{worse.version.version}", cfg.tracking.uri).model_dir + "/README.md"
    assert "## Test metrics" in open(card).read()


@pytest.fixture(scope="module")
def served(registry_cfg, ray_session, trained, evaluation, smoke_dataset):
    from ray import serve

    with start_run(registry_cfg, "register") as run:
        reg = register(registry_cfg, run, trained.model_dir, smoke_dataset, evaluation.metrics)
    url = deploy(registry_cfg, "models:/serve-test@champion")
    yield url, reg.version.version
    serve.shutdown()


def test_http_predict_returns_labels_scores_and_version(served, smoke_dataset):
    url, version = served
    body = requests.post(f"{url}/predict", json={"texts": ["a vision paper", "a language model"], "top_k": 2},
                         timeout=30).json()
    assert body["model_version"] == version
    assert len(body["predictions"]) == 2
    for p in body["predictions"]:
        assert p["label"] in smoke_dataset.label_names and 0 < p["score"] <= 1
        assert len(p["top_k"]) == 2
    assert requests.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"
    assert requests.get(f"{url}/model", timeout=30).json()["version"] == version
    assert requests.get(f"{url}/docs", timeout=30).status_code == 200


@pytest.mark.parametrize(
    "payload, status",
    [
        ({"texts": []}, 422),
        ({"texts": "not a list"}, 422),
        ({"texts": [1, 2]}, 422),
        ({"wrong": ["x"]}, 422),
        ({"texts": ["x"], "top_k": 0}, 422),
        ({"texts": ["x"] * 100}, 413),
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(served, payload, status):
    url, _ = served
    response = requests.post(f"{url}/predict", json=payload, timeout=30)
    assert response.status_code == status
    assert response.json()["detail"]
    assert requests.post(f"{url}/predict", json={"texts": ["still here"]}, timeout=30).status_code == 200
