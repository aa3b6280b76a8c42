"""Evaluate, gate and register against a real MLflow server, then serve the champion over real HTTP."""

import pytest
import requests
from mlflow import MlflowClient

from evaluate.gate import register
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
    assert "confusion_matrix.png" in [a.path for a in client.list_artifacts(run.run_id)]
    return result


def test_evaluation_covers_the_whole_test_split(evaluation, smoke_dataset):
    support = sum(row["support"] for row in evaluation.metrics["per_class"].values())
    assert support == smoke_dataset.manifest["splits"]["test"]


def test_gate_registers_champion_then_moves_aliases(registry_cfg, smoke_dataset, trained, evaluation):
    import dataclasses

    labels = smoke_dataset.label_names
    client = MlflowClient(registry_cfg.tracking.uri)
    with start_run(registry_cfg, "register") as run:
        first = register(registry_cfg, run, trained.model_dir, labels, evaluation.metrics, tags={"case": "first"})
    assert first.decision.passed and first.alias == "champion"
    assert client.get_model_version_by_alias("serve-test", "champion").version == first.version.version

    strict = dataclasses.replace(registry_cfg, gate=dataclasses.replace(registry_cfg.gate, min_weighted_f1=0.999))
    with start_run(strict, "register") as run:
        rejected = register(strict, run, trained.model_dir, labels, evaluation.metrics, tags={})
    assert not rejected.decision.passed and "min_weighted_f1" in rejected.decision.reasons[0]
    assert client.get_model_version_by_alias("serve-test", "challenger").version == rejected.version.version
    assert client.get_model_version_by_alias("serve-test", "champion").version == first.version.version

    with start_run(registry_cfg, "register") as run:
        second = register(registry_cfg, run, trained.model_dir, labels, evaluation.metrics, tags={})
    assert client.get_model_version_by_alias("serve-test", "champion").version == second.version.version
    assert client.get_model_version_by_alias("serve-test", "previous").version == first.version.version
    resolved = resolve_model("models:/serve-test@champion", registry_cfg.tracking.uri)
    assert resolved.version == second.version.version


@pytest.fixture(scope="module")
def served(registry_cfg, ray_session, trained, evaluation, smoke_dataset):
    from ray import serve

    with start_run(registry_cfg, "register") as run:
        reg = register(registry_cfg, run, trained.model_dir, smoke_dataset.label_names, evaluation.metrics, tags={})
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
