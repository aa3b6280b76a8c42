"""`raylane loop`, as a user runs it, against what `raylane run` left serving: the default
champion drifts under texts from another distribution, feedback labels them, the loop retrains on
the source plus that feedback, and the new version walks the canary to champion; a cycle the gate
rejects leaves the champion and cools down; the budget holds; a loop killed mid-cycle is recorded
as interrupted and no second loop runs beside a first. Real CLI processes, Ray, Serve, MLflow."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from mlflow import MlflowClient

from raylane.http import free_port
from raylane.manifest import read_manifest
from tests.paths import REPO_ROOT
from tests.waiting import interrupt, wait_until

MODEL = "loop-model"
# Far shorter than any title + description the champion was trained on: its input_tokens PSI soars.
OFF_DISTRIBUTION = [f"zq {i}" for i in range(40)]
IN_DISTRIBUTION = [
    "Object detection with YOLO on video",
    "Fine-tuning BERT for question answering",
    "Deploying models with Kubernetes and monitoring drift",
    "Graph neural networks for molecules",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model, mlflow_server, ray_address):
    """`raylane run` on the smoke config (2 epochs, no sweep), kept serving with canary rollouts,
    feedback and a short drift window; what the loop commands need to find the same things."""
    out = tmp_path_factory.mktemp("loop") / "out"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_ADDRESS"] = ray_address
    secret = out.parent / "feedback-secret"  # a file: the replicas run in the session's Ray, not this env
    secret.write_text("a test secret for signing prediction ids")
    common = [
        "--config",
        "configs/smoke.yaml",
        f"model.name_or_path={tiny_model}",
        f"output_dir={out}",
        f"tracking.uri={mlflow_server}",
        "tracking.experiment=loop",
        f"model.registered_name={MODEL}",
        f"serve.port={port}",
        "sweep.enabled=false",
        "train.epochs=2",
        "tracking.system_metrics_s=0",
        "serve.rollout=canary",
        "serve.feedback=true",
        f"serve.feedback_secret_file={secret}",
        "serve.feedback_flush_s=0.5",
        "serve.drift_window=30",
        "serve.canary.steps=[50, 100]",
        "serve.canary.step_s=0",
        "serve.canary.min_requests=5",
        "serve.canary.tick_s=0.5",
        # The tiny model's latency and answers are noisy on 2 busy cores; the rollout's rules have
        # tests of their own (tests/integration/serve/test_canary.py).
        "serve.canary.max_psi=1000",
        "serve.canary.max_p95_ms_ratio=50",
        "gate.max_regression=-1",
        "loop.triggers.new_data=false",
        # Slices flag rows in a Ray Data task before scoring: with the app holding a CPU, that
        # task once waited forever for the one the scoring actor took.
        "evaluate.slices=[{name: short, max_words: 3}]",
    ]
    log = open(out.parent / "run.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raylane", "run", *common, "serve.keep_running=true"],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_until(
            lambda: (out / "run_summary.json").exists() or proc.poll() is not None, "run did not finish", timeout_s=900
        )
        assert proc.poll() is None, (out.parent / "run.log").read_text()[-5000:]
        yield {"out": out, "url": f"http://127.0.0.1:{port}", "env": env, "common": common, "mlflow": mlflow_server}
    finally:
        interrupt(proc)
        from ray import serve

        serve.shutdown()  # the app outlives the run process (a detached controller)


def loop(served, *overrides: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raylane", "loop", "--once", *served["common"], *overrides],
        cwd=REPO_ROOT,
        env=served["env"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def loop_runs(served) -> list:
    client = MlflowClient(served["mlflow"])
    experiment = client.get_experiment_by_name("loop")
    return client.search_runs([experiment.experiment_id], filter_string="tags.`raylane.command` = 'loop'")


def state(served) -> dict:
    return json.loads((served["out"] / "loop" / "state.json").read_text())


def champion(served) -> str:
    return MlflowClient(served["mlflow"]).get_model_version_by_alias(MODEL, "champion").version


def test_nothing_to_do_does_nothing_and_says_what_it_saw(served):
    done = loop(served, "loop.triggers.min_feedback=1000", "loop.triggers.drift_psi=50", "loop.triggers.drift_for_s=0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loop: nothing to do (drift " in done.stdout and "feedback 0/1000 new rows" in done.stdout
    assert loop_runs(served) == [] and state(served)["cycles"] == []


def test_drift_retrains_on_feedback_and_the_new_version_walks_the_canary_to_champion(served):
    url, before = served["url"], champion(served)
    answered = []
    for text in OFF_DISTRIBUTION:
        response = requests.post(f"{url}/predict", json={"texts": [text]}, timeout=30)
        assert response.status_code == 200, response.text
        answered.append((text, response.json()["predictions"][0]["prediction_id"]))
    psi = wait_until(lambda: max(requests.get(f"{url}/model", timeout=10).json()["drift"]["psi"].values()), "no PSI")
    assert psi > 1.0
    for text, prediction_id in answered:
        body = {"text": text, "label": "other", "prediction_id": prediction_id}
        assert requests.post(f"{url}/feedback", json=body, timeout=30).status_code == 200
    from raylane.pipelines.triggers import feedback_rows

    wait_until(lambda: feedback_rows(str(served["out"] / "feedback")) == len(answered), "feedback not written")

    done = loop(served, "loop.triggers.drift_psi=1.0", "loop.triggers.drift_for_s=0", "loop.cooldown_s=0")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "loop: cycle starts: drift: PSI" in done.stdout
    assert "passed the gate and walks the canary" in done.stdout, done.stdout[-3000:]

    manifest = read_manifest(str(served["out"] / "dataset"))
    assert "feedback" in {source.role for source in manifest.sources}
    assert manifest.counts.accepted > 764  # the source's rows and the feedback's
    (run,) = loop_runs(served)
    assert run.data.tags["raylane.loop.reason"].startswith("drift: PSI")
    assert run.data.tags["raylane.loop.outcome"] == "challenger"
    new = run.data.tags["registered_version"]
    assert new != before

    versions, stop = [], threading.Event()

    def traffic():
        with requests.Session() as session:
            while not stop.is_set():
                for text in IN_DISTRIBUTION:
                    response = session.post(f"{url}/predict", json={"texts": [text]}, timeout=30)
                    versions.append(response.json().get("model_version") if response.ok else response.status_code)

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: champion(served) == new, "the challenger did not become champion", timeout_s=180)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert new in versions and all(isinstance(v, str) for v in versions)  # no request failed on the way
    after = requests.post(f"{url}/predict", json={"texts": [IN_DISTRIBUTION[0]]}, timeout=30).json()
    assert after["model_version"] == new
    assert state(served)["cycles"][-1]["outcome"] == "challenger"


def test_a_rejected_cycle_keeps_the_champion_then_cool_down_and_budget_hold(served):
    before, runs_before = champion(served), len(loop_runs(served))
    schedule = ["loop.triggers.every_s=1", "loop.triggers.drift_psi=0"]
    done = loop(served, *schedule, "loop.cooldown_s=0", "gate.min_weighted_f1=1.0")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "loop: cycle starts: schedule:" in done.stdout
    assert "rejected by the gate (test weighted F1" in done.stdout, done.stdout[-3000:]
    assert champion(served) == before
    cycle = state(served)["cycles"][-1]
    assert cycle["outcome"] == "rejected" and cycle["failed_rules"]
    assert len(loop_runs(served)) == runs_before + 1

    cooling = loop(served, *schedule, "loop.cooldown_s=3600")
    assert cooling.returncode == 0 and "but cooling down until" in cooling.stdout, cooling.stdout
    spent = loop(served, *schedule, "loop.cooldown_s=0", f"loop.max_cycles_per_day={len(state(served)['cycles'])}")
    assert spent.returncode == 0 and "cycles in the last 24 h, the budget" in spent.stdout, spent.stdout
    assert len(loop_runs(served)) == runs_before + 1  # neither started a cycle


def test_a_loop_killed_mid_cycle_is_recorded_and_never_runs_beside_another(served):
    schedule = ["loop.triggers.every_s=1", "loop.triggers.drift_psi=0", "loop.cooldown_s=0"]
    first = subprocess.Popen(
        [sys.executable, "-m", "raylane", "loop", "--once", *served["common"], *schedule],
        cwd=REPO_ROOT,
        env=served["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        running = wait_until(lambda: state(served).get("running", {}).get("run_id"), "no cycle started", 120)
        second = loop(served, *schedule)
        assert second.returncode == 0
        assert f"another raylane loop (pid {first.pid})" in second.stdout, second.stdout
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)

    restarted = loop(served, "loop.triggers.drift_psi=0")  # no trigger: it only finds the killed cycle
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "was interrupted; recorded" in restarted.stdout and "loop: nothing to do" in restarted.stdout
    cycle = state(served)["cycles"][-1]
    assert cycle["outcome"] == "interrupted" and cycle["run_id"] == running and "running" not in state(served)
    assert MlflowClient(served["mlflow"]).get_run(running).info.status == "KILLED"


def test_a_signed_alert_wakes_a_running_loop_and_its_guards_still_decide(served, tmp_path):
    """The long-running loop with its webhook: an Alertmanager POST wakes it at once (the poll
    is an hour), and the cool-down after the last cycle holds the cycle it asks for."""
    from raylane.pipelines.webhook import signature

    record = state(served) if (served["out"] / "loop" / "state.json").exists() else {"cycles": []}
    if not record.get("last_cycle_at"):  # run alone: a cycle just ended, as far as the loop knows
        (served["out"] / "loop").mkdir(exist_ok=True)
        (served["out"] / "loop" / "state.json").write_text(json.dumps({**record, "last_cycle_at": time.time()}))
    port, secret = free_port(), "alertmanager shared secret"
    env = {**served["env"], "RAYLANE_LOOP_TEST_WEBHOOK": secret}
    log_path = tmp_path / "loop.log"
    webhook = [
        "loop.triggers.webhook=true",
        f"loop.webhook_port={port}",
        "loop.webhook_secret_env=RAYLANE_LOOP_TEST_WEBHOOK",
        "loop.triggers.drift_psi=0",
        "loop.poll_s=3600",
        "loop.cooldown_s=3600",
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "raylane", "loop", *served["common"], *webhook],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "taking alerts at POST" in log_path.read_text(), "the webhook did not start", 60)
        url = f"http://127.0.0.1:{port}/loop/trigger"
        body = json.dumps({"alerts": [{"status": "firing", "labels": {"alertname": "RaylaneDriftHigh"}}]}).encode()
        assert requests.post(url, data=body, timeout=10).status_code == 401  # unsigned: nothing queued
        signed = requests.post(url, data=body, headers={"X-Raylane-Signature": signature(secret.encode(), body)})
        assert signed.status_code == 202
        wait_until(
            lambda: "due (webhook: RaylaneDriftHigh firing), but cooling down until" in log_path.read_text(),
            "the alert did not wake the loop",
            30,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, log_path.read_text()[-3000:]
