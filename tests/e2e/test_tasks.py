"""Every task through the CLI, end to end, on its shipped config with a tiny model: ingest,
train, evaluate, gate, register, serve, and a prediction over real HTTP (the run's own, of a test
row; for images also an upload and an image over the limits).

In-process: `raylane.pipelines.cli.main(["run", ...])`, the CLI's own entry point (parsing, config
checks, preflight, every stage), on the session's Ray and MLflow server. A subprocess per task
cost a private Ray, the imports and a Ray Train start-up each (about 2.5 minutes a task); what
only a real process shows (the console, Ctrl-C, `serve.keep_running`) the one subprocess run per
engine checks: tests/e2e/test_cli_run.py and tests/e2e/test_chat_run.py. Training runs the real
loop in local mode (resources.num_workers=0): what is under test here is each task's path through
the stages; real workers are tests/integration/train's and the two runs above."""

import base64
import io
import json

import pytest
import requests
from mlflow import MlflowClient

from raylane.http import free_port
from raylane.pipelines.cli import main
from tests.paths import REPO_ROOT

CASES = {
    "text_multilabel": ("configs/text-multilabel.yaml", ["train.lr=3e-3", "gate.min_micro_f1=0"]),
    "text_regression": ("configs/text-regression.yaml", ["train.lr=3e-3", "gate.max_rmse=0"]),
    "image_classification": ("configs/digits.yaml", ["gate.min_weighted_f1=0"]),
}


@pytest.fixture
def mlflow_process_state(monkeypatch):
    """What `run` leaves in this process put back: the registry calls mlflow.set_tracking_uri,
    which also exports $MLFLOW_TRACKING_URI for subprocesses, and a later test's CLI would log to
    this test's server instead of its own store."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # monkeypatch restores it as it was
    yield
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("task", list(CASES))
def test_each_task_runs_end_to_end(
    task,
    tmp_path,
    tiny_model,
    tiny_image_model,
    mlflow_server,
    serve_cleanup,
    mlflow_process_state,
    monkeypatch,
    capsys,
):
    config, overrides = CASES[task]
    model = tiny_image_model if task == "image_classification" else tiny_model
    port, out = free_port(), tmp_path / "out"
    monkeypatch.chdir(REPO_ROOT)  # the shipped configs name their data relative to the checkout
    argv = [
        "run",
        "--config",
        config,
        f"output_dir={out}",
        "train.epochs=2",
        "resources.num_workers=0",
        *overrides,
        f"model.name_or_path={model}",
        f"serve.port={port}",
        f"tracking.uri={mlflow_server}",
        f"tracking.experiment=e2e-{task}",
        f"model.registered_name=e2e-{task.replace('_', '-')}",
        "serve.keep_running=false",
    ]
    code = main(argv)
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    _check(task, summary, mlflow_server, port)


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
