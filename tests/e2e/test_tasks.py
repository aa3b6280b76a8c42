"""Every task through the real CLI, end to end, on its shipped config with a tiny model: ingest,
train, evaluate, gate, register, serve, and a prediction over real HTTP (the run's own, of a test
row; for images also an upload and an image over the limits)."""

import base64
import io
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

CASES = {
    "text_multilabel": ("configs/text-multilabel.yaml", ["train.lr=3e-3", "gate.min_micro_f1=0"]),
    "text_regression": ("configs/text-regression.yaml", ["train.lr=3e-3", "gate.max_rmse=0"]),
    "image_classification": ("configs/digits.yaml", ["gate.min_weighted_f1=0"]),
}


def _start(config: str, overrides: list[str], out, log, keep_running: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    command = [
        sys.executable,
        "-m",
        "raylane",
        "run",
        "--config",
        config,
        f"output_dir={out}",
        "train.epochs=2",
        *overrides,
        f"serve.keep_running={str(keep_running).lower()}",
    ]
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def _summary(proc, out, log_path) -> dict:
    path, deadline = out / "run_summary.json", time.time() + 600
    while not path.exists():
        assert proc.poll() is None, f"run exited {proc.returncode}:\n{log_path.read_text()[-5000:]}"
        assert time.time() < deadline, "run did not finish in 10 minutes"
        time.sleep(2)
    return json.loads(path.read_text())


@pytest.mark.parametrize("task", list(CASES))
def test_each_task_runs_end_to_end(task, tmp_path, tiny_model, tiny_image_model, mlflow_server):
    config, overrides = CASES[task]
    model = tiny_image_model if task == "image_classification" else tiny_model
    port, out, log_path = free_port(), tmp_path / "out", tmp_path / "run.log"
    overrides = [
        *overrides,
        f"model.name_or_path={model}",
        f"serve.port={port}",
        f"tracking.uri={mlflow_server}",
        f"tracking.experiment=e2e-{task}",
        f"model.registered_name=e2e-{task.replace('_', '-')}",
    ]
    keep_running = task == "image_classification"
    with open(log_path, "w") as log:
        proc = _start(config, overrides, out, log, keep_running)
        try:
            summary = _summary(proc, out, log_path)
            _check(task, summary, mlflow_server, port)
        finally:
            # A run that keeps serving is stopped with Ctrl-C; one that does not must end by
            # itself (a Ctrl-C sent while it exits would test the exit, not the run).
            if keep_running or proc.poll() is None and not (out / "run_summary.json").exists():
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert keep_running or proc.returncode == 0, log_path.read_text()[-3000:]


def _check(task: str, summary: dict, mlflow_server: str, port: int) -> None:
    assert summary["task"] == task and summary["gate"]["passed"]
    headline = summary["headline_metric"]
    parent = MlflowClient(mlflow_server).get_run(summary["pipeline_run_id"])
    assert parent.data.metrics[headline] == pytest.approx(summary[headline])
    version = MlflowClient(mlflow_server).get_model_version_by_alias(summary["registered_model"], "champion")
    assert version.tags["task"] == task
    (answer,) = summary["sample_response"]["predictions"]
    if task == "text_multilabel":
        assert {"labels", "prediction_id"} <= answer.keys()
        assert 0 <= summary["test_micro_f1"] <= 1 and "test_hamming_loss" in summary
    elif task == "text_regression":
        assert isinstance(answer["value"], float)
        # The target is a word count of 3 to 47: a trained model is far nearer than the range.
        assert summary["test_rmse"] < 15 and "test_spearman" in summary
    else:
        assert answer["label"] in {str(d) for d in range(10)}
        _check_images_over_http(f"http://127.0.0.1:{port}")


def _check_images_over_http(url: str) -> None:
    from PIL import Image

    def png(size: int, shade: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("L", (size, size), shade).save(buffer, "PNG")
        return buffer.getvalue()

    upload = requests.post(
        f"{url}/predict/upload",
        files=[("files", ("a.png", png(8, 10), "image/png")), ("files", ("b.png", png(8, 200), "image/png"))],
        timeout=60,
    )
    assert upload.status_code == 200 and len(upload.json()["predictions"]) == 2, upload.text
    as_json = requests.post(f"{url}/predict", json={"images": [base64.b64encode(png(8, 90)).decode()]}, timeout=60)
    assert as_json.status_code == 200 and as_json.json()["predictions"][0]["label"].isdigit()
    for body, status in (
        ({"images": ["not base64 !"]}, 422),
        ({"images": [base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()]}, 422),  # a corrupt PNG
        ({"images": [base64.b64encode(png(6000, 1)).decode()]}, 422),  # 36 Mpx: over serve.max_image_pixels
        ({"texts": ["an image model"]}, 422),
    ):
        response = requests.post(f"{url}/predict", json=body, timeout=60)
        assert response.status_code == status, (str(body)[:80], response.text[:300])
    assert requests.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"  # still serving
