"""MLflow tracking against a real (SQLite) store: what the UI reads off experiments and runs."""

import time

import pytest
from mlflow import MlflowClient

from raylane.config import load_config
from raylane.tracking import EXPERIMENT_DESCRIPTION, ensure_experiment, start_run, system_metrics


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    # Its own SQLite store, whatever server another test exported in $MLFLOW_TRACKING_URI.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_config(None, [f"output_dir={tmp_path}", "tracking.experiment=ui"])


def test_the_experiment_opens_as_model_training_with_a_description(cfg):
    uri, experiment_id = ensure_experiment(cfg)
    tags = MlflowClient(uri).get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == EXPERIMENT_DESCRIPTION


def test_an_existing_experiment_is_retagged_and_its_own_description_kept(cfg):
    uri = f"sqlite:///{cfg.output_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    made_by_hand = client.create_experiment("ui", tags={"mlflow.note.content": "ours", "mlflow.experimentKind": "x"})
    assert ensure_experiment(cfg) == (uri, made_by_hand)
    tags = client.get_experiment(made_by_hand).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == "ours"


def test_nested_runs_inherit_the_source_and_carry_their_stage(cfg):
    with start_run(cfg, "run-20261202", stage="pipeline", source="raylane run") as parent:
        with start_run(cfg, "trial-1 lr=0.001", parent, stage="trial") as child:
            pass
    client = MlflowClient(parent.tracking_uri)
    tags = client.get_run(child.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.run_id
    assert tags["raylane.stage"] == "trial"
    assert tags["mlflow.source.name"] == "raylane run"
    assert tags["mlflow.user"]
    assert client.get_run(child.run_id).info.run_name == "trial-1 lr=0.001"
    assert client.get_run(parent.run_id).info.status == "FINISHED"


def test_a_failing_block_marks_its_run_failed(cfg):
    with pytest.raises(RuntimeError), start_run(cfg, "train") as run:
        raise RuntimeError("boom")
    assert MlflowClient(run.tracking_uri).get_run(run.run_id).info.status == "FAILED"


@pytest.mark.parametrize(("code", "status"), [(0, "KILLED"), (None, "KILLED"), (1, "FAILED")])
def test_a_stop_request_marks_its_run_killed_and_an_error_exit_failed(cfg, code, status):
    """Ray Tune stops a trial by raising SystemExit(0) in its thread: the trial did not fail."""
    with pytest.raises(SystemExit), start_run(cfg, "trial") as run:
        raise SystemExit(code)
    assert MlflowClient(run.tracking_uri).get_run(run.run_id).info.status == status


def test_system_metrics_are_sampled_while_the_block_runs(cfg):
    with start_run(cfg, "train") as run, system_metrics(run, interval_s=0.5):
        time.sleep(2.5)
    metrics = MlflowClient(run.tracking_uri).get_run(run.run_id).data.metrics
    assert metrics["system/cpu_utilization_percentage"] >= 0
    assert metrics["system/system_memory_usage_megabytes"] > 0


def test_system_metrics_off_logs_nothing(cfg):
    with start_run(cfg, "train") as run, system_metrics(run, interval_s=0):
        time.sleep(0.5)
    assert not MlflowClient(run.tracking_uri).get_run(run.run_id).data.metrics


def test_metrics_linked_to_a_logged_model_and_a_dataset(cfg):
    with start_run(cfg, "register") as run:
        client = MlflowClient(run.tracking_uri)
        model = client.create_logged_model(run.experiment_id, name="model", source_run_id=run.run_id)
        run.log_metrics({"test_accuracy": 0.75}, model_id=model.model_id, dataset=("dataset/test", "abc"))
        run.log_model_output(model.model_id)
    linked = client.get_logged_model(model.model_id).metrics
    assert [(m.key, m.value, m.dataset_name, m.dataset_digest) for m in linked] == [
        ("test_accuracy", 0.75, "dataset/test", "abc")
    ]
    assert [o.model_id for o in client.get_run(run.run_id).outputs.model_outputs] == [model.model_id]
