"""The real CLI, end to end, as a user runs it: `python -m raylane run` on the smoke config,
tracked on a real MLflow server; then a metric read back from MLflow and a prediction over HTTP."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from mlflow import MlflowClient

from raylane.http import free_port
from tests.paths import REPO_ROOT


def test_run_end_to_end(tmp_path, tiny_model, mlflow_server):
    port = free_port()
    out = tmp_path / "out"
    log = open(tmp_path / "run.log", "w")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raylane",
            "run",
            "--config",
            "configs/smoke.yaml",
            f"model.name_or_path={tiny_model}",
            f"output_dir={out}",
            f"tracking.uri={mlflow_server}",
            "tracking.experiment=e2e",
            "model.registered_name=e2e-model",
            f"serve.port={port}",
            "serve.keep_running=true",
        ],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    summary_path = out / "run_summary.json"
    try:
        deadline = time.time() + 900
        while not summary_path.exists():
            assert proc.poll() is None, f"run exited {proc.returncode}:\n{(tmp_path / 'run.log').read_text()[-5000:]}"
            assert time.time() < deadline, "run did not finish in 15 minutes"
            time.sleep(2)
        summary = json.loads(summary_path.read_text())

        client = MlflowClient(mlflow_server)
        parent = client.get_run(summary["pipeline_run_id"])
        assert parent.data.metrics["test_weighted_f1"] == pytest.approx(summary["test_weighted_f1"])
        assert parent.data.params["train.epochs"] == "3"
        stages = {
            r.data.tags["raylane.stage"]
            for r in client.search_runs(
                [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
            )
        }
        assert {"ingest", "sweep", "evaluate", "register"} <= stages
        champion = client.get_model_version_by_alias("e2e-model", "champion")
        assert champion.version == summary["registered_version"] and summary["gate"]["passed"]
        assert champion.tags["pipeline_run_id"] == parent.info.run_id and champion.tags["training_run_id"]
        assert "## Test metrics" in champion.description  # the model card

        response = requests.post(
            f"http://127.0.0.1:{port}/predict", json={"texts": ["Object detection with YOLO on video"]}, timeout=60
        )
        assert response.status_code == 200
        body = response.json()
        assert body["model_version"] == champion.version
        assert body["predictions"][0]["label"] in {"computer-vision", "mlops", "natural-language-processing", "other"}
        # The tiny random model, 3 epochs: it must still beat always answering the majority class.
        assert summary["test_accuracy"] > 78 / 191
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the CLI exits cleanly and its local Ray shuts down
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
