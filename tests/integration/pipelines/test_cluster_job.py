"""A real 2-node Ray cluster on this machine (`ray start --head` + `ray start --address`), the
whole pipeline submitted to it with `ray job submit`, as the README tells users to."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from mlflow import MlflowClient

from raylane.http import free_port, free_ports
from tests.mlflow_server import basic_auth_env, running_mlflow_server
from tests.paths import REPO_ROOT

RAY = str(Path(sys.executable).parent / "ray")


def _node_ports(ports) -> list[str]:
    """Every per-node port explicit: the test session's own local Ray holds the defaults."""
    names = [
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
        "node-manager-port",
        "object-manager-port",
    ]
    return [f"--{name}={next(ports)}" for name in names]


def _kill_session(sid: int) -> None:
    procs = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                proc.terminate()
                procs.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


MLFLOW_USER, MLFLOW_PASSWORD = "admin", "cluster-test-mlflow-password"


@pytest.fixture
def mlflow_auth_server(tmp_path_factory, monkeypatch):
    """The tracking server as cluster.yaml starts it: MLflow's basic-auth app. This test's own
    client reads it with the credentials, as a user on the head would."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    with running_mlflow_server(
        root, "--app-name", "basic-auth", env=basic_auth_env(root, MLFLOW_USER, MLFLOW_PASSWORD)
    ) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
        yield uri


@pytest.fixture
def two_node_cluster():
    temp_dir = tempfile.mkdtemp(prefix="rl-", dir="/tmp")  # short: Ray's socket paths are length-limited
    ports = iter(free_ports(20))
    gcs, dashboard = next(ports), next(ports)
    # A temp dir per node, as on separate machines: on a shared one, the second node unpacks the
    # job's working_dir over the directory the driver runs in.
    common = ["--num-cpus=1", "--disable-usage-stats"]
    head = [
        RAY,
        "start",
        "--head",
        f"--port={gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={next(ports)}",
        *_node_ports(ports),
        f"--temp-dir={temp_dir}/h",
        *common,
    ]
    worker = [RAY, "start", f"--address=127.0.0.1:{gcs}", *_node_ports(ports), f"--temp-dir={temp_dir}/w", *common]
    # Token auth is Ray's default; every process of this cluster must agree on it. The job's
    # `python` is this environment's, as on a cluster node set up by cluster.yaml.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(RAY_AUTH_MODE="token", PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    # MLflow's credentials in the environment of `ray start`, as cluster.yaml passes them: every
    # job driver, Train worker and Serve replica inherits them.
    env.update(MLFLOW_TRACKING_USERNAME=MLFLOW_USER, MLFLOW_TRACKING_PASSWORD=MLFLOW_PASSWORD)
    # One new session for both nodes: every process of this cluster (and nothing else) is in it.
    starter = subprocess.Popen(
        ["bash", "-c", f"{shlex.join(head)} && {shlex.join(worker)}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out, _ = starter.communicate(timeout=180)
    try:
        assert starter.returncode == 0, out[-3000:]
        yield {"dashboard": f"http://127.0.0.1:{dashboard}", "env": env}
    finally:
        _kill_session(starter.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _train_worker_nodes(address: str, env: dict) -> set[str]:
    listed = subprocess.run(
        [
            RAY,
            "list",
            "actors",
            "--address",
            address,
            "--filter",
            "class_name=RayTrainWorker",
            "--detail",
            "--format",
            "json",
            "--limit",
            "1000",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    return {actor["node_id"] for actor in json.loads(listed.stdout)}


def test_pipeline_job_on_two_nodes(two_node_cluster, tiny_model, mlflow_auth_server, tmp_path):
    mlflow_server = mlflow_auth_server
    search = f"{mlflow_server}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401  # closed to anyone without credentials
    assert requests.get(search, auth=(MLFLOW_USER, "guess"), timeout=10).status_code == 401
    started = time.time()
    address, env = two_node_cluster["dashboard"], two_node_cluster["env"]
    port = free_port()
    # The code and the embedded data come with the upload; the job says where its code came from.
    show_origin = "import raylane.ingest as i; print('raylane.ingest from', i.__file__)"
    entrypoint = [
        "bash",
        "-c",
        f'python -c "{show_origin}" && exec "$@"',
        "job",
        "python",
        "-m",
        "raylane",
        "run",
        "--config",
        "configs/smoke.yaml",
        f"model.name_or_path={tiny_model}",
        f"output_dir={tmp_path / 'out'}",
        f"tracking.uri={mlflow_server}",
        "tracking.experiment=cluster",
        "model.registered_name=cluster-model",
        "sweep.enabled=false",
        "train.epochs=1",  # what is under test is where the work runs; the e2e run checks learning
        "resources.num_workers=2",
        "resources.cpus_per_worker=1",
        f"serve.port={port}",
        "serve.proxy_location=HeadOnly",
    ]
    log_path = tmp_path / "job.log"
    with open(log_path, "w") as log_file:
        submit = subprocess.run(
            [
                RAY,
                "job",
                "submit",
                "--address",
                address,
                "--working-dir",
                str(REPO_ROOT),
                "--runtime-env",
                str(REPO_ROOT / "configs" / "job_runtime_env.yaml"),
                "--",
                *entrypoint,
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
    log = log_path.read_text()
    assert submit.returncode == 0 and "succeeded" in log, log[-6000:]
    origin = next(line for line in log.splitlines() if line.startswith("raylane.ingest from"))
    assert "working_dir_files" in origin and str(REPO_ROOT) not in origin, origin  # the upload, as it is
    for noise in ("max_restarts > 0", "PYTHON worker processes have been started", "Failed to kill actor"):
        assert noise not in log, noise  # Ray's lines a user cannot act on, in the job's log as on a laptop

    nodes = _train_worker_nodes(address, env)
    assert len(nodes) == 2, f"training workers ran on {nodes}"  # one per node: data-parallel across the cluster

    champion = MlflowClient(mlflow_server).get_model_version_by_alias("cluster-model", "champion")
    response = requests.post(
        f"http://127.0.0.1:{port}/predict", json={"texts": ["Object detection on video"]}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == champion.version
    print(f"2-node job: {time.time() - started:.0f} s from submit to a served prediction")

    # The committed Serve config, as `serve deploy` takes it, aimed at this test's registry and port.
    serve_config = yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text())
    serve_config.update(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    pinned = f"models:/cluster-model/{champion.version}"  # the job served @champion: a visible change
    # Sized for this test's 1-CPU nodes: one fixed replica of half a CPU; its keys in a file of this test.
    (tmp_path / "api-keys").write_text("cluster-test-key\n")
    serve_config["applications"][0]["args"].update(
        model_uri=pinned,
        tracking_uri=mlflow_server,
        num_replicas=1,
        max_replicas=0,
        replica_cpus=0.5,
        api_keys_file=str(tmp_path / "api-keys"),
    )
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve_config))
    deployed = subprocess.run(
        [str(Path(RAY).with_name("serve")), "deploy", str(tmp_path / "serve.yaml"), "--address", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    deadline = time.time() + 120
    while True:  # the update rolls out: the new replica answers /model with the args of the file
        try:
            model = requests.get(
                f"http://127.0.0.1:{port}/model", headers={"Authorization": "Bearer cluster-test-key"}, timeout=10
            ).json()
            if model.get("uri") == pinned:
                break
        except (requests.RequestException, ValueError):
            pass
        assert time.time() < deadline, "serve deploy did not roll out in 2 minutes"
        time.sleep(1)
    assert model["version"] == champion.version
