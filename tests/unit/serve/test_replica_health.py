"""A chat replica's health, outside Serve (its constructor needs no replica context): /healthz and
Serve's check_health read state the work keeps and never run the model; batches that fail in a
row make it unhealthy, and one that succeeds makes it healthy again."""

import asyncio
import shutil
import time

import pytest
from fastapi import HTTPException

from raylane.serve.args import ServeArgs
from raylane.serve.chat import ChatReplica, Job
from raylane.serve.replica import FAILED_IN_A_ROW, public_uri
from raylane.tasks.saved import SavedTask


@pytest.fixture(scope="module")
def replica(tiny_causal_lm, tmp_path_factory) -> ChatReplica:
    model_dir = tmp_path_factory.mktemp("health") / "model"
    shutil.copytree(tiny_causal_lm, model_dir)
    SavedTask("causal_lm", [], {"generation": {"max_new_tokens": 4}}).write(model_dir)
    return ChatReplica(ServeArgs(model_uri=str(model_dir), task="causal_lm", replica_cpus=1))


def forward_passes(replica: ChatReplica) -> list:
    """A list that grows by one at each forward pass of the served model (a torch forward hook)."""
    calls: list = []
    replica.loaded.model.model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def job(replica: ChatReplica, prompt: list[int]) -> Job:
    from raylane.generate import Sampling

    return Job(replica.loaded, prompt, Sampling(2), time.perf_counter())


def run(replica: ChatReplica, jobs: list[Job]) -> list:
    return asyncio.run(replica._many_watched(jobs))


def test_the_health_checks_read_cached_state_and_never_run_the_model(replica):
    passes = forward_passes(replica)
    for _ in range(20):
        assert replica.healthz()["status"] == "ok"
        replica.check_health()
    assert passes == []
    run(replica, [job(replica, replica.loaded.model.text_prompt("hello"))])
    assert len(passes) >= 2  # the hook does see a generation


def test_batches_failing_in_a_row_make_the_replica_unhealthy_until_one_succeeds(replica):
    vocab = replica.loaded.model.model.config.vocab_size
    broken = job(replica, [vocab + 5])  # no such token: the embedding lookup raises in torch
    for failed in range(1, FAILED_IN_A_ROW + 1):
        with pytest.raises(IndexError):
            run(replica, [broken])
        assert replica.health.ok == (failed < FAILED_IN_A_ROW)
    with pytest.raises(RuntimeError, match=f"last {FAILED_IN_A_ROW} batches failed: IndexError"):
        replica.check_health()
    with pytest.raises(HTTPException) as answer:
        replica.healthz()
    assert answer.value.status_code == 503 and "IndexError" not in answer.value.detail  # no internals to anyone
    run(replica, [job(replica, replica.loaded.model.text_prompt("hello"))])
    replica.check_health()
    assert replica.healthz()["status"] == "ok"


def test_model_shows_no_server_path(replica, tmp_path):
    shown = replica.model()["uri"]
    assert shown == "model" and "/" not in shown
    assert public_uri("models:/chat@champion") == "models:/chat@champion"
    assert public_uri(f"{tmp_path}/exported/") == "exported"
