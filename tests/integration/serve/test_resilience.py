"""Losing one of two replicas mid-stream costs at most 1% of requests while Serve brings it back."""

import os
import signal
import threading
import time

import requests

from raylane.serve.loadtest import run_load
from tests.integration.serve.replicas import replica_pids, running_replicas


def test_killing_one_of_two_replicas_under_load_loses_under_one_percent(two_replicas, capsys):
    assert running_replicas() == 2
    (victim, survivor) = replica_pids()[:2]
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
    while not (running_replicas() == 2 and len(replica_pids()) == 2):
        assert time.time() < deadline, f"still {running_replicas()} replicas two minutes after the kill"
        time.sleep(1)
    pids = replica_pids()
    assert victim not in pids and survivor in pids  # a new replica, beside the one that lived
    assert requests.post(f"{two_replicas}/predict", json={"texts": ["back to two"]}, timeout=30).status_code == 200
