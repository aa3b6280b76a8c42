"""Preference tuning through the real CLI, end to end (`raylane run` on the shipped DPO config,
with a tiny Llama saved to disk as the model to start from and a corpus of pairs with bad rows):
ingest (every bad pair quarantined with its reason), DPO training against the frozen reference
on a real Ray Train worker, evaluation by generation and by pairs, the gate on preference
accuracy, the registry, and the served chat API."""

import json
import subprocess
import sys

from mlflow import MlflowClient

from raylane.http import free_port
from tests.chat_rows import BAD_PAIR_LINES, write_preference_corpus
from tests.paths import REPO_ROOT


def test_a_chat_model_is_tuned_on_preference_pairs_gated_registered_and_served(
    tmp_path, tiny_causal_lm, mlflow_server, cli_env
):
    source = write_preference_corpus(tmp_path / "data", 90)
    port, out = free_port(), tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "raylane",
        "run",
        "--config",
        "configs/llm-dpo.yaml",
        f"output_dir={out}",
        f"data.source={source}",
        "data.test_source=''",
        "data.test_fraction=0.2",
        "data.text_fields=[prompt]",
        "data.prompt_template=''",
        "data.max_length=64",
        f"model.name_or_path={tiny_causal_lm}",
        "model.registered_name=e2e-dpo",
        "train.peft=none",  # the reference a full copy (the LoRA reference runs in the unit tests)
        "train.epochs=3",
        "train.batch_size=8",
        "train.lr=1e-3",
        "train.dpo.beta=0.5",
        "evaluate.max_new_tokens=4",
        "gate.min_exact_match=0",
        "gate.min_preference_accuracy=0.6",
        f"serve.port={port}",
        f"tracking.uri={mlflow_server}",
        "tracking.experiment=e2e-dpo",
    ]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=cli_env, timeout=600)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-5000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["task"] == "preference" and summary["headline_metric"] == "test_exact_match"
    # Held-out pairs of a separable set, preferred more than the model training started from does.
    assert summary["test_preference_accuracy"] >= 0.6, summary
    assert "gate.min_preference_accuracy" in printed and "(gate REJECTED)" not in printed
    assert "POST /v1/chat/completions" in printed  # the served model answered the first chat request
    assert summary["sample_response"]["choices"][0]["message"]["role"] == "assistant"

    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("e2e-dpo", "champion")
    assert version.tags["task"] == "preference"
    parent = client.get_run(summary["pipeline_run_id"])
    children = {
        r.data.tags["mlflow.runName"]: r
        for r in client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    }
    ingest, train = children["ingest"], children["train"]
    assert ingest.data.metrics["rows_quarantined"] == len(BAD_PAIR_LINES)
    for reason in BAD_PAIR_LINES:
        assert ingest.data.metrics[f"rows_quarantined_{reason}"] == 1, reason
    for name in ("val_preference_accuracy", "val_reward_margin", "val_chosen_logp", "val_rejected_logp"):
        assert name in train.data.metrics, name
    evaluate = children["evaluate"].data.metrics
    assert evaluate["test_reward_margin"] > 0 and 0 <= evaluate["test_exact_match"] <= 1
