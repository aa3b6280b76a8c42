"""Canary rollouts on a real Serve app, over real HTTP, against a real MLflow server: a challenger
registered beside the champion takes its share of live traffic step by step and is promoted, or
rolled back on the evidence; by hand, `raylane rollout abort | promote` does the same."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import requests
from mlflow import MlflowClient

from raylane.drift import write_reference
from raylane.http import free_port, wait_until_ok
from raylane.rollout import read_rollout
from raylane.serve.app import build_app
from raylane.serve.deploy import serve_args
from raylane.tasks.saved import SavedTask
from tests.waiting import wait_until

NAME = "canary-test"
# An app name of its own: its metric series stay apart from the other serve tests' on the node.
APP = "canary"
LABELS = ["alpha", "beta", "gamma"]
TEXTS = [
    f"{word} number {i} about {topic}"
    for i, (word, topic) in enumerate(
        (w, t)
        for w in ("transformers", "vision", "graphs", "speech", "robots")
        for t in ("data", "models", "code", "maps")
    )
]
# Longer than the 16 positions of make_version(positions=16)'s model: it fails on these.
LONG_TEXTS = [
    f"a long account number {i} of how transformers, graphs and vision models were trained, evaluated and "
    "deployed on a small cluster over several weeks"
    for i in range(4)
]
STEPS = [10, 50, 100]


def replica_pids(deployment: str) -> list[int]:
    import ray
    from ray.util.state import list_actors

    actors = list_actors(
        address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")], detail=True, limit=1000
    )
    return [a.pid for a in actors if a.class_name == f"ServeReplica:{APP}:{deployment}"]


class Load:
    """Four clients sending POST /predict in a loop; every answer's status and model version kept."""

    def __init__(self, url: str, clients: int = 4, texts: list[str] = TEXTS):
        self.url, self.texts, self.answers, self._stop = url, texts, [], threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self, i: int) -> None:
        session, n = requests.Session(), 0
        while not self._stop.is_set():
            n += 1
            text = self.texts[(i + n) % len(self.texts)]
            response = session.post(f"{self.url}/predict", json={"texts": [text]}, timeout=30)
            version = response.json().get("model_version") if response.status_code == 200 else None
            self.answers.append((time.time(), response.status_code, version))

    def stop(self) -> list[tuple]:
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        return self.answers


@pytest.fixture(scope="module")
def registry(mlflow_server):
    client = MlflowClient(mlflow_server)
    client.create_registered_model(NAME)
    return client, client.create_experiment("canary-test")


@pytest.fixture(scope="module")
def make_version(registry, tiny_model, tmp_path_factory):
    """A new registered version of NAME: the tiny classifier (the same weights each time: a
    retrained model as good as the champion), or with `one_class` one that answers a single label
    for everything, or with `positions` one whose position embeddings stop there (it raises on any
    longer input, as a model exported with the wrong config does). Each carries the label mix the
    champion answers on TEXTS as its drift reference, as a training split's would be."""
    import torch

    from raylane.loader import load_model
    from raylane.models import load_classifier, load_tokenizer

    client, experiment = registry
    base = tmp_path_factory.mktemp("classifier")
    load_classifier(str(tiny_model), LABELS).save_pretrained(base)
    load_tokenizer(str(tiny_model)).save_pretrained(base)
    SavedTask("text_classification", LABELS).write(base)
    answered = Counter(answer["label"] for answer in load_model(str(base)).predict(TEXTS))
    rarest = min(LABELS, key=lambda label: answered[label])
    reference = {"features": {"label": {"bins": LABELS, "counts": [answered[label] + 1 for label in LABELS]}}}

    def make(one_class: bool = False, positions: int = 0) -> str:
        model_dir = tmp_path_factory.mktemp("version") / "model" / "artifacts" / "hf_model"
        shutil.copytree(base, model_dir)
        if one_class or positions:
            model = load_classifier(str(model_dir), LABELS)
        if one_class:  # the label the champion answers least, for everything
            with torch.no_grad():
                model.classifier.bias.copy_(torch.tensor([50.0 if label == rarest else -50.0 for label in LABELS]))
        if positions:
            embeddings = model.bert.embeddings
            kept = embeddings.position_embeddings.weight[:positions].detach().clone()
            embeddings.position_embeddings = torch.nn.Embedding.from_pretrained(kept, freeze=False)
            model.config.max_position_embeddings = positions
        if one_class or positions:
            model.save_pretrained(model_dir)
        write_reference(str(model_dir), reference)
        run = client.create_run(experiment)
        client.log_artifacts(run.info.run_id, str(model_dir.parent.parent), "model")
        return client.create_model_version(NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version

    return make


@pytest.fixture(scope="module")
def canary_app(ray_session, registry, make_version, smoke_cfg_factory, mlflow_server, tmp_path_factory):
    from ray import serve

    client, _ = registry
    client.set_registered_model_alias(NAME, "champion", make_version())
    secret = tmp_path_factory.mktemp("secret") / "feedback-secret"
    secret.write_text("canary-feedback-secret\n")
    cfg = smoke_cfg_factory(
        "serve.feedback=true",
        f"serve.feedback_uri={tmp_path_factory.mktemp('feedback')}",
        f"serve.feedback_secret_file={secret}",
        f"tracking.uri={mlflow_server}",
        f"model.registered_name={NAME}",
        f"serve.port={free_port()}",
        "serve.rollout=canary",
        "serve.poll_interval_s=0.5",
        f"serve.canary.steps={STEPS}",
        "serve.canary.step_s=1",
        "serve.canary.min_requests=40",
        "serve.canary.tick_s=0.5",
        "serve.canary.max_p95_ms_ratio=4",  # two equal models on 2 busy cores: only a real slowdown
        "serve.canary.min_feedback_accuracy=0.5",
        "serve.canary.min_feedback=10",
    )
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_app(serve_args(cfg, f"models:/{NAME}@champion")), name=APP, route_prefix="/")
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    wait_until_ok(f"{url}/healthz")
    yield cfg, url
    serve.shutdown()


def aliases(client) -> dict:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def test_a_challenger_that_answers_one_class_is_rolled_back_at_the_first_step(canary_app, registry, make_version):
    cfg, url = canary_app
    client, _ = registry
    champion = aliases(client)["champion"]
    load = Load(url)
    try:
        bad = make_version(one_class=True)
        client.set_registered_model_alias(NAME, "challenger", bad)
        ended = wait_until(
            lambda: (r := read_rollout(cfg.tracking.uri, NAME)) and r.version == bad and r.state != "running" and r,
            "the rollout of the one-class challenger did not end",
        )
        time.sleep(2)  # replicas take the plan at their next report (tick_s): nothing more to the rejected version
        cut = time.time()
        time.sleep(1.5)
    finally:
        answers = load.stop()
    assert ended.state == "rolled_back" and "serve.canary.max_psi" in ended.reason, ended
    assert [entry["step"] for entry in ended.history] == [0]  # judged once, at the first step
    assert aliases(client).get("rejected") == bad and aliases(client)["champion"] == champion
    assert "challenger" not in aliases(client)
    assert {status for _, status, _ in answers} == {200}  # the champion answered throughout
    assert {version for t, _, version in answers if t > cut} == {champion}
    assert client.get_model_version(NAME, bad).tags["rollout"].startswith("rolled_back: serve.canary.max_psi")


def test_a_challenger_that_raises_on_some_inputs_is_rolled_back_and_the_champion_answers_them(
    canary_app, registry, make_version
):
    cfg, url = canary_app
    client, _ = registry
    champion = aliases(client)["champion"]
    load = Load(url, texts=TEXTS[:8] + LONG_TEXTS)
    try:
        bad = make_version(positions=16)
        client.set_registered_model_alias(NAME, "challenger", bad)
        ended = wait_until(
            lambda: (r := read_rollout(cfg.tracking.uri, NAME)) and r.version == bad and r.state != "running" and r,
            "the rollout of the failing challenger did not end",
        )
    finally:
        answers = load.stop()
    assert ended.state == "rolled_back" and ended.reason.startswith("serve.canary.max_error_rate"), ended
    assert [entry["step"] for entry in ended.history] == [0]
    failed = ended.history[0]["challenger"]["errors"]
    assert failed > 0, ended.history
    assert aliases(client).get("rejected") == bad and aliases(client)["champion"] == champion
    # Every request the challenger failed was answered again by the champion: no 5xx reached a client.
    assert {status for _, status, _ in answers} == {200}
    assert {version for _, _, version in answers} <= {champion, bad}


def test_feedback_that_the_challenger_answers_wrong_rolls_it_back(canary_app, registry, make_version):
    """People say (signed feedback) that the challenger's answers are wrong: rolled back on
    serve.canary.min_feedback_accuracy, though its errors, latency and drift are all fine."""
    cfg, url = canary_app
    client, _ = registry
    champion = aliases(client)["champion"]
    # One client, which corrects every answer the challenger gives: feedback keeps pace with requests.
    session, corrected, answers = requests.Session(), 0, []
    try:
        candidate = make_version()  # the champion's own weights: only the feedback can tell
        client.set_registered_model_alias(NAME, "challenger", candidate)
        deadline = time.time() + 90
        while not ((r := read_rollout(cfg.tracking.uri, NAME)) and r.version == candidate and r.state != "running"):
            assert time.time() < deadline, "the rollout did not end"
            text = TEXTS[corrected % len(TEXTS)]
            response = session.post(f"{url}/predict", json={"texts": [text]}, timeout=30)
            answers.append(response.status_code)
            answer = response.json()
            said = answer["predictions"][0]
            if answer["model_version"] == candidate:
                other = next(label for label in LABELS if label != said["label"])
                body = {"text": text, "label": other, "prediction_id": said["prediction_id"]}
                assert session.post(f"{url}/feedback", json=body, timeout=30).status_code == 200
                corrected += 1
    finally:
        session.close()
    assert r.state == "rolled_back" and r.reason.startswith("serve.canary.min_feedback_accuracy"), (r, corrected)
    judged = r.history[-1]["challenger"]
    assert judged["feedback"] >= 10 and judged["feedback_accuracy"] == 0.0, judged
    assert aliases(client).get("rejected") == candidate and aliases(client)["champion"] == champion
    assert set(answers) == {200}


def test_a_good_challenger_walks_every_step_to_champion(canary_app, registry, make_version):
    cfg, url = canary_app
    client, _ = registry
    champion = aliases(client)["champion"]
    load = Load(url)
    try:
        good = make_version()
        client.set_registered_model_alias(NAME, "challenger", good)
        # The controller killed at the second step: Serve starts another, which resumes from the record.
        wait_until(
            lambda: (r := read_rollout(cfg.tracking.uri, NAME)) and r.version == good and r.step == 1,
            "the rollout did not reach its second step",
        )
        (controller,) = replica_pids("RolloutController")
        os.kill(controller, signal.SIGKILL)
        ended = wait_until(
            lambda: (r := read_rollout(cfg.tracking.uri, NAME)) and r.version == good and r.state != "running" and r,
            "the rollout of the good challenger did not end",
            timeout_s=180,
        )
        time.sleep(1.5)
        cut = time.time()
        time.sleep(1.5)
    finally:
        answers = load.stop()
    assert ended.state == "promoted", ended
    assert [entry["share"] for entry in ended.history] == STEPS  # each step once, across the restart
    assert replica_pids("RolloutController") not in ([], [controller])
    for entry in ended.history:  # the share each step actually routed, counted by the replicas
        routed = entry["challenger"]["requests"] / (entry["challenger"]["requests"] + entry["champion"]["requests"])
        assert abs(100 * routed - entry["share"]) <= 5, entry
        assert entry["challenger"]["requests"] >= 40 and entry["challenger"]["errors"] == 0
    pointed = aliases(client)
    assert pointed["champion"] == good and pointed["previous"] == champion and "challenger" not in pointed
    assert {status for _, status, _ in answers} == {200}
    assert {version for t, _, version in answers if t > cut} == {good}  # every replica serves the new champion
    run = client.get_run(ended.run_id)
    assert run.data.tags["outcome"] == "promoted" and run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(ended.run_id)}
    assert {"rollout_timeline.png", "rollout.json"} <= artifacts
    assert [m.value for m in client.get_metric_history(ended.run_id, "share")] == STEPS


def rollout_cli(cfg, action: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "raylane",
            "rollout",
            action,
            f"tracking.uri={cfg.tracking.uri}",
            f"model.registered_name={NAME}",
            f"output_dir={cfg.output_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_abort_and_promote_by_hand(canary_app, registry, make_version):
    cfg, url = canary_app
    client, _ = registry
    champion = aliases(client)["champion"]
    load = Load(url)
    try:
        first = make_version()
        client.set_registered_model_alias(NAME, "challenger", first)
        wait_until(lambda: any(v == first for _, _, v in load.answers[-200:]), "the challenger took no request", 60)
        status = rollout_cli(cfg, "status")
        assert status["rollout"]["version"] == first and status["rollout"]["state"] == "running"
        aborted = rollout_cli(cfg, "abort")
        assert aborted["rollout"]["state"] == "aborted" and aborted["aliases"]["rejected"] == first
        time.sleep(2)  # the controller's next tick, then each replica's next report
        cut = time.time()
        time.sleep(1.5)
        assert {v for t, _, v in load.answers if t > cut} == {champion}

        second = make_version()
        client.set_registered_model_alias(NAME, "challenger", second)
        wait_until(
            lambda: (r := read_rollout(cfg.tracking.uri, NAME)) and r.version == second, "no rollout started", 60
        )
        promoted = rollout_cli(cfg, "promote")
        assert promoted["rollout"]["state"] == "promoted" and promoted["aliases"]["champion"] == second
        assert promoted["aliases"]["previous"] == champion
        wait_until(
            lambda: {v for t, _, v in load.answers if t > time.time() - 1} == {second},
            "the replicas did not move to the version promoted by hand",
            60,
        )
    finally:
        answers = load.stop()
    assert {status for _, status, _ in answers} == {200}


def test_a_chat_model_walks_a_one_step_rollout(canary_app, mlflow_server, tiny_causal_lm, tmp_path):
    """The chat engine rolls out the same way: a tiny Llama challenger takes half the chat
    requests for one step and is promoted; every request is answered by one version or the other."""
    from ray import serve

    from raylane.serve.app import ServeArgs

    name, client = "canary-chat", MlflowClient(mlflow_server)
    client.create_registered_model(name)
    experiment = client.create_experiment("canary-chat")

    def register() -> str:
        model_dir = tmp_path / f"v{len(list(tmp_path.iterdir()))}" / "model" / "artifacts" / "hf_model"
        shutil.copytree(tiny_causal_lm, model_dir)
        SavedTask("causal_lm", [], {"generation": {"max_new_tokens": 2}}).write(model_dir)
        run = client.create_run(experiment)
        client.log_artifacts(run.info.run_id, str(model_dir.parent.parent), "model")
        return client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version

    champion = register()
    client.set_registered_model_alias(name, "champion", champion)
    args = ServeArgs(
        model_uri=f"models:/{name}@champion",
        task="causal_lm",
        tracking_uri=mlflow_server,
        poll_interval_s=0.5,
        rollout="canary",
        canary={"steps": [50], "step_s": 0, "min_requests": 20, "tick_s": 0.5, "max_p95_ms_ratio": 4},
    )
    _, url = canary_app  # the Serve of this module, a second app beside the scoring one
    serve.run(build_app(args), name="canary-chat", route_prefix="/chat")
    answers, stop = [], threading.Event()

    def chat(i: int) -> None:
        session = requests.Session()
        while not stop.is_set():
            body = {"messages": [{"role": "user", "content": f"hello {i}"}], "max_tokens": 2}
            response = session.post(f"{url}/chat/v1/chat/completions", json=body, timeout=60)
            fingerprint = response.json().get("system_fingerprint") if response.status_code == 200 else None
            answers.append((time.time(), response.status_code, fingerprint))

    threads = [threading.Thread(target=chat, args=(i,), daemon=True) for i in range(3)]
    try:
        wait_until_ok(f"{url}/chat/healthz")
        for thread in threads:
            thread.start()
        challenger = register()
        client.set_registered_model_alias(name, "challenger", challenger)
        ended = wait_until(
            lambda: (r := read_rollout(mlflow_server, name)) and r.version == challenger and r.state != "running" and r,
            "the chat rollout did not end",
            timeout_s=120,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        serve.delete("canary-chat")
    assert ended.state == "promoted", ended
    (step,) = ended.history
    routed = step["challenger"]["requests"] / (step["challenger"]["requests"] + step["champion"]["requests"])
    assert abs(100 * routed - 50) <= 5, step
    assert {status for _, status, _ in answers} == {200}
    assert {f"models:/{name}/{champion}", f"models:/{name}/{challenger}"} <= {f for _, _, f in answers}
    assert client.get_model_version_by_alias(name, "champion").version == challenger


def test_the_shipped_dashboard_and_alerts_read_only_metrics_the_app_exports(canary_app):
    """After the rollouts above (both engines, a canary share set, drift watched), every metric the
    Grafana dashboard and the alert rules of monitoring/ query is on the node's metrics port."""
    from tests.prometheus import metrics_port, scrape, shipped_metric_names

    cfg, url = canary_app
    text = TEXTS[0]
    said = requests.post(f"{url}/predict", json={"texts": [text]}, timeout=30).json()["predictions"][0]
    feedback = {"text": text, "label": said["label"], "prediction_id": said["prediction_id"]}
    assert requests.post(f"{url}/feedback", json=feedback, timeout=30).status_code == 200
    wanted, exported = shipped_metric_names(), set()
    deadline = time.time() + 60  # replicas and proxies push their metrics every few seconds
    while not wanted <= exported and time.time() < deadline:
        exported.update(name for name, _, _ in scrape(metrics_port(), prefix="ray_"))
        time.sleep(1)
    assert wanted <= exported, sorted(wanted - exported)
