"""Following a registry alias, against a real MLflow server, with a real chat replica built
outside Serve (its follower thread is what is under test): each version is downloaded once into a
directory of its own, by number even where an alias named it; a version that fails to load is not
tried again until the alias moves; a swap prunes the versions neither serving nor just replaced."""

import json
import logging
import shutil
import time

import pytest

from raylane.serve.args import ServeArgs
from raylane.serve.chat import ChatReplica
from raylane.tasks.saved import SavedTask

NAME = "swap-cache"


def register(client, experiment: str, model_dir) -> str:
    """A new version of NAME whose artifacts hold `model_dir` as artifacts/hf_model (what a
    logged raylane model holds), logged to a run of its own."""
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(model_dir.parent.parent), "model")
    return client.create_model_version(NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version


def wait_until(condition, what: str, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.1)


@pytest.fixture
def versions(mlflow_server, tiny_causal_lm, tmp_path):
    """Versions 1 and 3 of NAME load; version 2's config names an architecture nobody has."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    client.create_registered_model(NAME)
    experiment = client.create_experiment("swap-cache")
    numbers = []
    for i, broken in enumerate((False, True, False)):
        model_dir = tmp_path / f"v{i}" / "artifacts" / "hf_model"
        shutil.copytree(tiny_causal_lm, model_dir)
        SavedTask("causal_lm", [], {"generation": {"max_new_tokens": 2}}).write(model_dir)
        if broken:
            config = json.loads((model_dir / "config.json").read_text())
            (model_dir / "config.json").write_text(json.dumps({**config, "model_type": "no-such-architecture"}))
        numbers.append(register(client, experiment, model_dir))
    assert numbers == ["1", "2", "3"]
    return client


def test_versions_are_cached_by_number_failures_remembered_and_old_ones_pruned(
    versions, mlflow_server, tmp_path, monkeypatch
):
    from raylane.registry import version_dir

    cache = tmp_path / "cache"
    monkeypatch.setenv("RAYLANE_MODEL_CACHE", str(cache))
    cached_dir = version_dir(str(cache), mlflow_server, NAME, "0").parent

    def cached() -> set[str]:
        return {p.name for p in cached_dir.iterdir() if not p.name.startswith(".")}

    failures: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lambda record: "failed to load" in record.getMessage() and failures.append(record)
    logging.getLogger("ray.serve").addHandler(handler)
    versions.set_registered_model_alias(NAME, "champion", "1")
    replica = ChatReplica(
        ServeArgs(
            model_uri=f"models:/{NAME}@champion", task="causal_lm", tracking_uri=mlflow_server, poll_interval_s=0.2
        )
    )
    try:
        assert replica.loaded.version == "1" and cached() == {"1"}  # by number, though named by alias
        versions.set_registered_model_alias(NAME, "champion", "2")
        wait_until(lambda: replica.follower.refused == "2", "version 2 was never tried")
        time.sleep(1.5)  # about 7 more polls
        assert len(failures) == 1, [r.getMessage() for r in failures]
        assert replica.loaded.version == "1" and replica.healthz()["status"] == "ok"

        versions.set_registered_model_alias(NAME, "champion", "3")
        wait_until(lambda: replica.loaded.version == "3", "version 3 was never swapped in")
        assert cached() == {"1", "3"}  # serving and just replaced; the failed 2 pruned
        assert replica.model()["version"] == "3"

        versions.set_registered_model_alias(NAME, "champion", "2")  # the alias moved again: 2 is tried again
        wait_until(lambda: len(failures) == 2, "version 2 was not tried again after the alias moved back to it")
        assert replica.loaded.version == "3"
    finally:
        replica.follower.stop()
        logging.getLogger("ray.serve").removeHandler(handler)
