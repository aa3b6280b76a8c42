"""Instruction fine-tuning through the real CLI, end to end (`raylane run` on the shipped chat
config, with a tiny random Llama and a small corpus with bad rows): ingest, LoRA training,
evaluation by generation, the gate, the registry, Serve, and chat completions over real HTTP,
streamed and not."""

import json
import subprocess
import sys
import time

import pytest
import requests
from mlflow import MlflowClient

from raylane.http import free_port
from tests.chat_rows import BAD_PROMPT_LINES, write_chat_corpus
from tests.paths import REPO_ROOT
from tests.waiting import interrupt


def _sse_content(response) -> str:
    """The streamed reply: the `delta.content` pieces of every chunk, until [DONE]."""
    pieces, done = [], False
    for line in response.iter_lines(decode_unicode=True):
        if not line or not line.startswith("data: "):
            continue
        data = line.removeprefix("data: ")
        if data == "[DONE]":
            done = True
            break
        chunk = json.loads(data)
        assert chunk["object"] == "chat.completion.chunk"
        pieces.append(chunk["choices"][0]["delta"].get("content") or "")
    assert done, "the stream did not end with [DONE]"
    return "".join(pieces)


def test_a_chat_model_is_tuned_registered_and_served(tmp_path, tiny_causal_lm, mlflow_server, cli_env):
    source, _ = write_chat_corpus(tmp_path / "data", 90)
    port, out, log_path = free_port(), tmp_path / "out", tmp_path / "run.log"
    command = [
        sys.executable,
        "-m",
        "raylane",
        "run",
        "--config",
        "configs/llm-sft.yaml",
        f"output_dir={out}",
        f"data.source={source}",
        "data.test_source=''",
        "data.test_fraction=0.2",
        "data.text_fields=[prompt]",
        "data.label_field=response",
        "data.prompt_template=''",
        "data.max_length=64",
        f"model.name_or_path={tiny_causal_lm}",
        "model.registered_name=e2e-chat",
        "train.epochs=6",
        "train.batch_size=8",
        "train.lr=2e-2",
        "evaluate.max_new_tokens=4",
        "gate.min_exact_match=0",
        f"serve.port={port}",
        "serve.keep_running=true",
        f"tracking.uri={mlflow_server}",
        "tracking.experiment=e2e-chat",
    ]
    with open(log_path, "w") as log:
        # On the session's Ray, which cli_env rids of the run's Serve app afterwards.
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=cli_env)
        try:
            path, deadline = out / "run_summary.json", time.time() + 600
            while not path.exists():
                assert proc.poll() is None, f"run exited {proc.returncode}:\n{log_path.read_text()[-5000:]}"
                assert time.time() < deadline, "run did not finish in 10 minutes"
                time.sleep(2)
            summary = json.loads(path.read_text())
            _check_run(summary, mlflow_server)
            _check_chat_api(f"http://127.0.0.1:{port}")
            printed = log_path.read_text()
            assert "POST /v1/chat/completions" in printed and "LoRA:" in printed
        finally:
            interrupt(proc)


def _check_run(summary: dict, mlflow_server: str) -> None:
    assert summary["task"] == "causal_lm" and summary["headline_metric"] == "test_exact_match"
    assert 0 <= summary["test_exact_match"] <= 1 and summary["test_perplexity"] > 1
    reply = summary["sample_response"]
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["role"] == "assistant"
    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("e2e-chat", "champion")
    assert version.tags["task"] == "causal_lm"
    assert "base model" in version.description and "## Test metrics" in version.description
    parent = client.get_run(summary["pipeline_run_id"])
    assert parent.data.metrics["test_exact_match"] == pytest.approx(summary["test_exact_match"])
    ingest = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.mlflow.runName = 'ingest'",
    )[0]
    assert ingest.data.metrics["rows_quarantined"] == len(BAD_PROMPT_LINES)
    evaluate = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.mlflow.runName = 'evaluate'",
    )[0]
    assert "generations.json" in {a.path for a in client.list_artifacts(evaluate.info.run_id)}


def _check_chat_api(url: str) -> None:
    body = {"messages": [{"role": "user", "content": "Which colour goes with the sky number 7?"}], "max_tokens": 4}
    answer = requests.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    content = answer.json()["choices"][0]["message"]["content"]
    with requests.post(
        f"{url}/v1/chat/completions", json={**body, "stream": True}, stream=True, timeout=60
    ) as streamed:
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        assert _sse_content(streamed) == content  # greedy: the same reply, token by token
    bad = requests.post(f"{url}/v1/chat/completions", json={"messages": []}, timeout=30)
    assert 400 <= bad.status_code < 500 and bad.json()
    assert requests.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code == 200  # still serving
