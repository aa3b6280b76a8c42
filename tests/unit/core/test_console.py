"""What the driver prints of the lines Ray forwards: raylane's and real ones kept, the Ray lines
a user cannot act on dropped, through Ray's own printing function."""

import io
import logging

import ray._private.worker as ray_worker

from raylane.console import hide_ray_noise


def test_ray_noise_is_dropped_and_every_other_line_kept(monkeypatch):
    monkeypatch.setattr(ray_worker, "print_worker_logs", ray_worker.print_worker_logs)  # restored after
    hide_ray_noise()
    hide_ray_noise()  # idempotent: wrapped once
    sink = io.StringIO()
    ray_worker.print_worker_logs(
        {
            "pid": 123,
            "ip": "10.0.0.1",
            "localhost": "10.0.0.1",
            "actor_name": "TrainController",
            "lines": [
                "core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and ID: 'ab' has constructor "
                "arguments in the object store and max_restarts > 0. If the arguments ...",
                "epoch 1/3  train_loss 1.2432",
                "Traceback (most recent call last):",
            ],
        },
        sink,
    )
    ray_worker.print_worker_logs(
        {
            "pid": "raylet",
            "ip": "10.0.0.1",
            "localhost": "10.0.0.1",
            "lines": ["WARNING: 8 PYTHON worker processes have been started on node: ab with address: 10.0.0.1"],
        },
        sink,
    )
    ray_worker.print_worker_logs(
        {
            "pid": 456,
            "ip": "10.0.0.1",
            "localhost": "10.0.0.1",
            "actor_name": "PlacementGroupCleaner",
            "lines": ["Detected that the Ray Train controller actor (ab) is dead. Cleaning up placement group"],
        },
        sink,
    )
    printed = sink.getvalue()
    assert "epoch 1/3  train_loss 1.2432" in printed and "Traceback" in printed
    assert "max_restarts > 0" not in printed and "PYTHON worker processes" not in printed
    assert "Cleaning up placement group" not in printed
    assert printed.count("\n") == 2


def test_the_token_note_is_dropped_and_other_auth_warnings_kept(caplog):
    hide_ray_noise()
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    with caplog.at_level(logging.WARNING, logger=log.name):
        log.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled")
        log.warning("Token authentication is disabled for this Ray cluster.")
    assert [r.getMessage() for r in caplog.records] == ["Token authentication is disabled for this Ray cluster."]
