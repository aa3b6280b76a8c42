"""Credentials inside URIs never reach what raylane records."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from raylane.redact import redact, redacted, remember


@pytest.mark.parametrize(
    "text, hidden",
    [
        ("s3://AKIAEXAMPLE:s3cr3t/key@bucket/raw/*.csv", "s3cr3t/key"),
        ("https://alice:hunter2@mlflow.example.com:5000", "hunter2"),
        ("gs://bucket/data.parquet?token=ya29.abc&x=1", "ya29.abc"),
        ("https://acct.blob.core.windows.net/c/f.csv?sv=2020&sig=AbC%2Fd&se=2030", "AbC%2Fd"),
        ("s3://bucket/p?access_key=AKIAEXAMPLE&secret_key=wJalr&endpoint_override=http://127.0.0.1:9000", "wJalr"),
        ("https://h/p?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA%2F2026", "deadbeef"),
        ("reading s3://id:pw@bucket/x failed: timeout", "pw@"),
    ],
)
def test_credentials_are_masked(text, hidden):
    assert hidden not in redact(text) and "***" in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "data/made-with-ml/dataset.csv",
        "models:/raylane-classifier@champion",
        "http://127.0.0.1:5000",
        "s3://bucket/path/*.csv?endpoint_override=http://127.0.0.1:9000",
        "write to someone@example.com",
        "train.lr=3e-5",
    ],
)
def test_everything_else_is_left_alone(text):
    assert redact(text) == text


def test_nested_values_are_masked_where_they_sit():
    value = {"data": {"source": "s3://k:SECRET@b/x", "fields": ["a", "s3://k:SECRET@b/y"]}, "n": 3}
    assert "SECRET" not in str(redacted(value)) and redacted(value)["n"] == 3


# --- by value: what a ${VAR} took from the environment ------------------------------------------

SECRET = "tok-9f8e7d6c5b4a"  # in no pattern: not in a URI, not a secret-named parameter


@pytest.fixture
def secret_cfg(tmp_path, monkeypatch):
    from raylane.config import load_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # a SQLite store of its own
    monkeypatch.setenv("RAYLANE_TEST_RUN_SECRET", SECRET)
    cfg = load_config(None, [f"output_dir={tmp_path}", "tracking.run_name=run-${RAYLANE_TEST_RUN_SECRET}"])
    assert cfg.tracking.run_name == f"run-{SECRET}"  # the value is used as it is; only records mask it
    return cfg


def test_a_value_from_the_environment_never_reaches_mlflow(secret_cfg, tmp_path):
    from mlflow import MlflowClient

    from raylane.pipelines.commands import pipeline_run

    with pipeline_run(secret_cfg, "run") as run:  # params, config.json, the run's name and tags
        run.set_tags({"note": f"started with {SECRET}"})
    client = MlflowClient(run.tracking_uri)
    recorded = client.get_run(run.run_id)
    assert recorded.data.params["tracking.run_name"] == recorded.info.run_name == "run-***"
    config_json = Path(client.download_artifacts(run.run_id, "config.json", str(tmp_path))).read_text()
    assert json.loads(config_json)["tracking"]["run_name"] == "run-***"
    recorded_text = json.dumps([recorded.data.params, recorded.data.tags, recorded.info.run_name]) + config_json
    assert SECRET not in recorded_text
    assert redact(f"console: {SECRET}!") == "console: ***!"


def test_a_worker_masks_it_too_once_it_has_the_run_it_logs_to(secret_cfg):
    """A Ray worker gets the config as an object and never expands it: what it knows to mask comes
    with its RunRef. A fresh interpreter stands in for the worker."""
    from mlflow import MlflowClient

    from raylane.tracking import start_run

    worker = "import pickle, sys; run = pickle.loads(sys.stdin.buffer.read()); run.log_params({'note': sys.argv[1]})"
    env = {k: v for k, v in os.environ.items() if k != "RAYLANE_TEST_RUN_SECRET"}
    with start_run(secret_cfg, "train") as run:
        subprocess.run(
            [sys.executable, "-c", worker, f"seen {SECRET}"], input=pickle.dumps(run), env=env, check=True, timeout=120
        )
    assert MlflowClient(run.tracking_uri).get_run(run.run_id).data.params["note"] == "seen ***"


def test_short_values_and_settings_are_not_masked_by_value():
    remember(["1", "abc", "true", "1000", "0.5", "1e-5"])
    text = "workers 1, abc, true, 1000 steps, lr 0.5 and 1e-5"
    assert redact(text) == text
