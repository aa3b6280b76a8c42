"""Two replicas under sustained load: no errors for a minute, and losing a replica mid-stream
costs at most 1% of requests while Serve brings it back."""

import os
import signal
import threading
import time

import pytest
import requests
from ray import serve

from serve.deploy import APP_NAME, deploy
from serve.loadtest import run_load
from raylane.http import free_port

DEPLOYMENT = "Classifier"


@pytest.fixture(scope="module")
def two_replicas(ray_session, smoke_cfg_factory, tmp_path_factory, tiny_model):
    from raylane.models import load_classifier, load_tokenizer

    model = tmp_path_factory.mktemp("model")
    load_classifier(str(tiny_model), ["alpha", "beta", "gamma"]).save_pretrained(model)
    load_tokenizer(str(tiny_model)).save_pretrained(model)
    cfg = smoke_cfg_factory(f"serve.port={free_port()}", "serve.num_replicas=2", "serve.replica_cpus=0.5")
    url = deploy(cfg, str(model))
    yield url
    serve.shutdown()


def _running_replicas() -> int:
    states = serve.status().applications[APP_NAME].deployments[DEPLOYMENT].replica_states
    return states.get("RUNNING", 0)


def _replica_pids() -> list[int]:
    import ray
    from ray.util.state import list_actors

    # This session's Ray by address: another local Ray on the machine would make it ambiguous.
    actors = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")],
                         detail=True, limit=1000)
    return [a.pid for a in actors if a.class_name == f"ServeReplica:{APP_NAME}:{DEPLOYMENT}"]


@pytest.mark.slow
def test_sixty_seconds_of_sustained_load_without_an_error(two_replicas, capsys):
    report = run_load(two_replicas, concurrency=8, seconds=60)
    with capsys.disabled():
        print(f"\nsustained load, 60 s at concurrency 8 on 2 replicas: {report.summary()}")
    assert report.requests > 600, report.summary()  # it really was under load
    assert report.statuses == {200: report.ok}, report.statuses
    assert report.percentile_ms(99) < 5000


def test_killing_one_of_two_replicas_under_load_loses_under_one_percent(two_replicas, capsys):
    assert _running_replicas() == 2
    (victim, survivor) = _replica_pids()[:2]
    result = {}
    loader = threading.Thread(target=lambda: result.update(report=run_load(two_replicas, concurrency=8, seconds=30)))
    loader.start()
    time.sleep(5)
    os.kill(victim, signal.SIGKILL)
    loader.join(timeout=120)
    report = result["report"]
    with capsys.disabled():
        print(f"\nreplica {victim} killed 5 s into 30 s of load: {report.summary()}")
    assert report.requests > 300, report.summary()
    assert report.success_rate >= 0.99, report.statuses

    deadline = time.time() + 120
    while not (_running_replicas() == 2 and len(_replica_pids()) == 2):
        assert time.time() < deadline, f"still {_running_replicas()} replicas two minutes after the kill"
        time.sleep(1)
    pids = _replica_pids()
    assert victim not in pids and survivor in pids  # a new replica, beside the one that lived
    assert requests.post(f"{two_replicas}/predict", json={"texts": ["back to two"]}, timeout=30).status_code == 200
