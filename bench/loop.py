"""loop_warm_start: what `raylane loop` takes from a trigger to the new version serving, on the
embedded default, retraining from the champion's weights (loop.warm_start) against retraining
from the base model, and the test weighted F1 each reaches.

One `raylane run` (no sweep) deploys the champion and keeps serving; then two `raylane loop
--once` cycles, triggered by the schedule, against that app: from scratch (train.epochs as the
default, 6), then warm (2 epochs). Each is timed from the loop's start to `GET /model` answering
the version the cycle registered (serve.rollout direct: the replicas swap to it). Training shares
the 2 cores with the serving app: one core each (serve.replica_cpus=1,
resources.cpus_per_worker=1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench import REPO_ROOT
from bench.harness import benchmark


def _wait(condition, what: str, timeout_s: float):
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(1)


def _served_version(url: str) -> str:
    try:
        return requests.get(f"{url}/model", timeout=10).json().get("version") or ""
    except (requests.RequestException, ValueError):
        return ""


def _cycle(common: list[str], url: str, out: Path, *overrides: str) -> dict:
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "raylane", "loop", "--once", *common, *overrides],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loop failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    cycles = json.loads((out / "loop" / "state.json").read_text())["cycles"]
    if not cycles or cycles[-1]["started_at"] < started:
        raise RuntimeError(f"the loop ran no cycle:\n{done.stdout[-3000:]}")
    cycle = cycles[-1]
    _wait(lambda: _served_version(url) == cycle["version"], "the new version never served", 300)
    return {
        "s": round(time.time() - started, 1),
        "cycle_s": round(cycle["ended_at"] - cycle["started_at"], 1),
        "weighted_f1": round(cycle["metrics"]["weighted_f1"], 4),
        "version": cycle["version"],
    }


@benchmark(
    "loop_warm_start",
    "raylane loop, trigger to the new version serving: warm start (2 epochs) vs from scratch (6), and F1",
    goal="warm start faster at a weighted F1 within a point of from scratch",
)
def run(quick: bool) -> dict:
    scratch_epochs, warm_epochs = (1, 1) if quick else (6, 2)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        from raylane.http import free_port

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        common = [
            f"output_dir={out}",
            f"serve.port={port}",
            "sweep.enabled=false",
            "serve.replica_cpus=1",
            "resources.cpus_per_worker=1",
            "gate.max_regression=-1",  # both retrained versions serve, whatever their F1
            "loop.triggers.new_data=false",
            "loop.triggers.every_s=1",
            "loop.cooldown_s=0",
        ]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        head = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--num-cpus=2", "--include-dashboard=false"],
            env=env,
        )
        assert head.returncode == 0
        env["RAY_ADDRESS"] = "auto"  # the run and both loops on one Ray, where the app lives on
        os.environ["RAY_ADDRESS"] = "auto"
        first = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raylane",
                "run",
                *common,
                f"train.epochs={scratch_epochs}",
                "serve.keep_running=true",
            ],
            cwd=REPO_ROOT,
            env=env,
        )
        try:
            _wait(lambda: (out / "run_summary.json").exists(), "the first run did not finish", 1200)
            initial = json.loads((out / "run_summary.json").read_text())
            scratch = _cycle(common, url, out, f"train.epochs={scratch_epochs}")
            warm = _cycle(common, url, out, f"train.epochs={warm_epochs}", "loop.warm_start=true")
        finally:
            first.send_signal(signal.SIGINT)
            first.wait(timeout=60)
            os.environ.pop("RAY_ADDRESS", None)
            subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    return {
        "ours": warm["s"],
        "baseline": scratch["s"],
        "ratio": round(scratch["s"] / warm["s"], 2),
        "unit": "s (trigger to the new version serving)",
        "warm_weighted_f1": warm["weighted_f1"],
        "scratch_weighted_f1": scratch["weighted_f1"],
        "champion_weighted_f1": round(initial["test_weighted_f1"], 4),
        "warm_cycle_s": warm["cycle_s"],
        "scratch_cycle_s": scratch["cycle_s"],
        "epochs": {"warm": warm_epochs, "scratch": scratch_epochs},
        "note": "ours = warm start from the champion; baseline = the same cycle from the base model",
    }
