"""Serve started outside raylane (`serve run` of the shipped config) refuses to serve a model on
a host other than loopback without API keys: the same rule as the pipeline config's serve
section, checked when the app is built, whichever way Serve was started."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from raylane.http import free_port
from tests.paths import REPO_ROOT

REFUSAL = "config key 'serve.allow_unauthenticated': serving on 0.0.0.0 without API keys"


def test_the_shipped_serve_config_without_keys_serves_nothing_on_all_interfaces(tmp_path):
    config = yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text())
    port = free_port()
    config.update(proxy_location="HeadOnly", http_options={"host": "0.0.0.0", "port": port})
    args = config["applications"][0]["args"]
    assert args.pop("api_keys_file")  # what a user deleting the keys line does
    args.update(model_uri=str(tmp_path / "no-model-needed"), num_replicas=1, max_replicas=0, replica_cpus=0.5)
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    serve_cli = Path(sys.executable).with_name("serve")
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        # A Serve of its own: what is tested is how a fresh `serve run` starts.
        proc = subprocess.Popen(
            [str(serve_cli), "run", str(tmp_path / "serve.yaml")],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 120
            while REFUSAL not in log_path.read_text():
                assert proc.poll() is None or REFUSAL in log_path.read_text(), log_path.read_text()[-3000:]
                assert time.time() < deadline, f"no refusal in 2 minutes:\n{log_path.read_text()[-3000:]}"
                time.sleep(1)
            # The proxy is up, but no model answers through it: every route is unknown.
            answered = requests.post(f"http://127.0.0.1:{port}/predict", json={"texts": ["x"]}, timeout=10)
            assert answered.status_code == 404
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # `serve run` shuts its Serve and Ray down on Ctrl-C
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
