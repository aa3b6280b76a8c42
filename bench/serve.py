"""serve_overhead, serve_batching, serve_vs_fastapi and serve_int8: the Ray Serve app
(`serve.app.build_app`) under load from `serve.loadtest.run_load` (one asyncio aiohttp client in
this process). Every request carries one real text: title + description of a row of
data/made-with-ml/holdout.csv (Made-With-ML's 191-row holdout), joined as ingest joins them, cycled in file
order, so lengths are what the default model is trained and tested on. Each deployment is a
single replica with replica_cpus=2 (2 CPUs reserved and 2 torch threads) on a local Ray, serving
a local model directory; only one server is busy at a time, and every side is warmed up before it
is timed. Sides alternate (bench.harness.side_by_side); figures are medians of the rounds.

serve_overhead: p50 latency of POST /predict over HTTP through Serve's proxy to the replica,
sequential (concurrency 1), against the same texts in the same order scored in this process by a
direct `Predictor.predict([text])` (2 torch threads). Same model: MiniLM-L6 with a fresh 4-label
head, fp32, exported with its tokenizer (max_length 128). The deployment for the headline has no
batching (max_batch_size 1, batch_wait_timeout_s 0), as a lone request would otherwise wait for
a batch to fill; the p50 with the default batching (max_batch_size 16, batch_wait_timeout_s
0.002) is recorded beside it. `ratio` is the added milliseconds (serve p50 - direct p50).
Its breakdown times the same calls in a Ray worker holding the replica's CPUs (Ray nices its
workers, so the model alone is slower there than in this process), an app that answers at once
on Serve and on plain uvicorn, and a canary step's router (`CanaryLane.pick` + `record`) alone.

serve_batching: ok requests/s at concurrency 32 of the same model and replica with batching
(max_batch_size 32, max_ongoing_requests 64, batch_wait_timeout_s 0.002) against without
(max_batch_size 1, otherwise identical). The app is deleted and redeployed for each side of each
round (the two replicas cannot both hold 2 CPUs on a 2-CPU machine); deployment time is not
timed.

serve_vs_fastapi: ok requests/s at concurrency 32 of our app as configured by default (batching
on, max_batch_size 16, 1 replica) with replica_cpus=2, against what a user writes without Ray:
a FastAPI app with a plain `def predict(body)` endpoint calling `Predictor.predict`, run by
`uvicorn` in one subprocess (one worker, torch's default threads, access log off as ours is),
serving the same model directory and answering the same request bodies. Both servers stay up;
the load alternates between them.

serve_int8: trains MiniLM-L6 on the embedded default (configs/default.yaml: Made-With-ML, 4
labels, no sweep, 3 epochs; 1 with --quick) with the pipeline's own ingest and Ray Train
`fit`, then evaluates it with the pipeline's evaluate stage with serve.quantize=int8, which
scores the test split (the holdout) with the fp32 model and with the int8 dynamically quantized
one and records the difference: the accuracy figures here are exactly what the pipeline logs.
Throughput: ok requests/s at concurrency 32 of that trained model served with quantize="int8"
against quantize="none", batching on (defaults), redeployed per side as in serve_batching.

Measure on a quiet machine: the load generator shares the CPUs with the server. Ray starts its
workers (replicas, proxy) at niceness 15 (RAY_worker_niceness), so the uvicorn baseline is started
at 15 too, or the load generator (at 0) would take CPU from the Serve side only; any other load on
the machine still starves niced processes first (on a busy 2-CPU box the Serve side of
serve_vs_fastapi once fell to a tenth of its quiet figure).
Each result records the 1-minute load average before and after (load_average_1min).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import REPO_ROOT
from bench.harness import benchmark, side_by_side
from raylane.http import free_port

HOLDOUT = REPO_ROOT / "data" / "made-with-ml" / "holdout.csv"
APP_NAME = "bench-serve"
CONCURRENCY = 32
REPLICA_CPUS = 2
RAY_WORKER_NICENESS = 15  # Ray's default worker_niceness

# What a user serving the model without Ray writes; run by uvicorn in a subprocess.
PLAIN_FASTAPI_APP = """\
import os

from fastapi import FastAPI
from pydantic import BaseModel

from raylane.predictor import Predictor

app = FastAPI()
predictor = Predictor(os.environ["MODEL_DIR"])


class Body(BaseModel):
    texts: list[str]
    top_k: int = 1


@app.post("/predict")
def predict(body: Body):
    return {"predictions": predictor.predict(body.texts, body.top_k)}


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
"""


# The same routes answering at once, no model: what HTTP, FastAPI and the client cost alone.
PLAIN_ECHO_APP = """\
from fastapi import FastAPI

app = FastAPI()


@app.post("/predict")
async def predict(body: dict):
    return {"predictions": [{"label": "echo", "score": 1.0} for _ in body["texts"]]}


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
"""


def say(message: str) -> None:
    print(f"[bench.serve] {message}", flush=True)


def holdout() -> tuple[list[str], list[str]]:
    """(texts as ingest builds them from title + description, sorted label names)."""
    import pandas as pd

    from raylane.text import join_text

    frame = pd.read_csv(HOLDOUT, dtype=str, keep_default_na=False)
    texts = [join_text([title, description]) for title, description in zip(frame["title"], frame["description"])]
    return texts, sorted(set(frame["tag"]))


def fresh_model(directory: Path, labels: list[str]) -> str:
    """MiniLM-L6 with a fresh (seeded) classification head, exported as training exports it."""
    import torch

    from raylane.config import DEFAULT_MODEL, load_config
    from raylane.models import load_classifier, load_tokenizer

    torch.manual_seed(0)
    model = load_classifier(DEFAULT_MODEL, labels)
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    tokenizer.model_max_length = load_config(None).data.max_length  # where inference truncates
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


class ServeBench:
    """A Serve instance on a free port, with one app of ours redeployed per configuration."""

    def __init__(self, url: str):
        self.url = url
        self.deployed = False

    def deploy(self, model_dir: str, **fields: Any) -> None:
        from ray import serve

        from raylane.http import wait_until_ok
        from raylane.serve.app import ServeArgs, build_app

        args = ServeArgs(model_uri=model_dir, replica_cpus=REPLICA_CPUS, **fields)
        self.delete()
        started = time.perf_counter()
        serve.run(build_app(args), name=APP_NAME, route_prefix="/")
        wait_until_ok(f"{self.url}/healthz")
        self.deployed = True
        say(
            f"deployed {', '.join(f'{k}={v}' for k, v in fields.items()) or 'defaults'} "
            f"in {time.perf_counter() - started:.1f} s"
        )

    def deploy_echo(self) -> None:
        """A Serve app with the same routes that answers at once: Serve's proxy, router and
        replica hop, and FastAPI, without a model or any of our app's code."""
        from fastapi import FastAPI
        from ray import serve

        from raylane.http import wait_until_ok

        api = FastAPI()

        # Access log off, as in our app: a log line per request costs the replica time too.
        # As many requests in the replica at once as ours holds (serve.max_ongoing_requests, 64): at
        # Serve's default of 5 the router backs off under concurrent load and the echo starves.
        @serve.deployment(
            ray_actor_options={"num_cpus": REPLICA_CPUS},
            logging_config={"enable_access_log": False},
            max_ongoing_requests=64,
        )
        @serve.ingress(api)
        class Echo:
            @api.post("/predict")
            async def predict(self, body: dict):
                return {"predictions": [{"label": "echo", "score": 1.0} for _ in body["texts"]]}

            @api.get("/healthz")
            def healthz(self):
                return {"status": "ok"}

        self.delete()
        serve.run(Echo.bind(), name=APP_NAME, route_prefix="/")
        wait_until_ok(f"{self.url}/healthz")
        self.deployed = True
        say("deployed the echo app")

    def delete(self) -> None:
        from ray import serve

        if self.deployed:
            serve.delete(APP_NAME)  # blocks until the replica is gone and its CPUs are free
            self.deployed = False


@contextlib.contextmanager
def serve_session() -> Iterator[ServeBench]:
    import ray
    from ray import serve

    from raylane.runtime import init_ray

    init_ray()
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield ServeBench(f"http://127.0.0.1:{port}")
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


@contextlib.contextmanager
def plain_fastapi(model_dir: str, directory: Path, source: str = PLAIN_FASTAPI_APP) -> Iterator[str]:
    """A plain FastAPI app (the model's, or `source`) in a uvicorn subprocess; its base URL once
    it answers."""
    from raylane.http import wait_until_ok

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "plain_app.py").write_text(source)
    port = free_port()
    env = {
        **os.environ,
        "MODEL_DIR": model_dir,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    log = open(directory / "uvicorn.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "plain_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
        ],
        cwd=directory,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # The niceness Ray gives its workers, the Serve replica among them: the
        # load generator in this process then competes with both servers alike.
        preexec_fn=lambda: os.nice(RAY_WORKER_NICENESS),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        say(f"uvicorn pid {proc.pid} starting on {url}")
        try:
            wait_until_ok(f"{url}/healthz", alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError):
            log.flush()
            raise RuntimeError(f"uvicorn did not come up:\n{(directory / 'uvicorn.log').read_text()[-3000:]}") from None
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def load(
    url: str,
    texts: list[str],
    concurrency: int,
    seconds: float | None = None,
    requests: int | None = None,
    label: str = "",
):
    """One run_load; refuses a run that mostly failed (a figure from errors is no figure)."""
    from raylane.serve.loadtest import run_load

    report = run_load(url, concurrency, seconds=seconds, requests=requests, texts=texts)
    summary = report.summary()
    if label:
        say(
            f"{label}: {summary['throughput_rps']} req/s, p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, "
            f"statuses {summary['statuses']}"
        )
    if report.success_rate < 0.99:
        raise RuntimeError(f"{url}: {label or 'load'} failed too often: {summary}")
    return report


def throughput_side(
    url: str, texts: list[str], seconds: float, warm_s: float, label: str, reports: list, deploy=None
) -> float:
    """(Re)deploy if asked, warm up, then time `seconds` of load at CONCURRENCY; ok requests/s."""
    if deploy:
        deploy()
    load(url, texts, CONCURRENCY, seconds=warm_s)
    report = load(url, texts, CONCURRENCY, seconds=seconds, label=label)
    reports.append(report.summary())
    return report.throughput


def throughput_result(
    times: dict, reports: dict[str, list[dict]], ours: str, baseline: str, load_before: float, seconds: float, unit: str
) -> dict[str, Any]:
    """The common fields of a throughput comparison: medians, ratio, runs, p50s, failures."""
    return {
        "load_average_1min": [load_before, load_average()],
        "ours": round(times["ours"], 1),
        "baseline": round(times["baseline"], 1),
        "ratio": round(times["ours"] / times["baseline"], 3),
        "unit": f"ok requests/s at concurrency {CONCURRENCY}, 1 text/request ({unit})",
        "seconds_per_run": seconds,
        f"rps_runs_{ours}": [round(x, 1) for x in times["ours_runs"]],
        f"rps_runs_{baseline}": [round(x, 1) for x in times["baseline_runs"]],
        f"p50_ms_{ours}": statistics.median(r["p50_ms"] for r in reports[ours]),
        f"p50_ms_{baseline}": statistics.median(r["p50_ms"] for r in reports[baseline]),
        "failed_requests": errors(reports[ours]) + errors(reports[baseline]),
    }


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def errors(reports: list[dict]) -> int:
    return sum(r["requests"] - r["ok"] for r in reports)


@benchmark(
    "serve_overhead",
    "p50 latency, 1 text/request, sequential: Serve + HTTP vs a direct Predictor.predict call",
    goal="<= 5 ms added",
)
def overhead(quick: bool) -> dict:
    from raylane.predictor import Predictor

    texts, labels = holdout()
    load_before = load_average()
    n = 60 if quick else 400
    rounds = 1 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = fresh_model(Path(tmp) / "model", labels)
        predictor = Predictor(model_dir, threads=REPLICA_CPUS)

        def direct() -> float:
            latencies = []
            for i in range(n):
                started = time.perf_counter()
                predictor.predict([texts[i % len(texts)]])
                latencies.append(time.perf_counter() - started)
            p50 = statistics.median(latencies) * 1000
            say(f"direct: p50 {p50:.2f} ms over {n} calls")
            return p50

        with serve_session() as server:
            reports: dict[str, list[dict]] = {"unbatched": [], "batched": []}

            def via_serve(kind: str) -> float:
                report = load(server.url, texts, 1, requests=n, label=f"serve ({kind}), {n} sequential requests")
                reports[kind].append(report.summary())
                return report.percentile_ms(50)

            for i in range(20):  # warm-up: first calls pay lazy initialisation
                predictor.predict([texts[i]])
            server.deploy(model_dir, max_batch_size=1, batch_wait_timeout_s=0.0)
            load(server.url, texts, 1, requests=20)
            times = side_by_side(lambda: via_serve("unbatched"), direct, rounds)

            server.deploy(model_dir)  # the default batching: max_batch_size 16, batch_wait_timeout_s 0.002
            load(server.url, texts, 1, requests=20)
            batched = statistics.median(via_serve("batched") for _ in range(rounds))

            # Where the added milliseconds go: the same requests to apps that answer at once.
            def echo_p50(url: str, label: str) -> float:
                load(url, texts, 1, requests=20)
                return statistics.median(
                    load(url, texts, 1, requests=n, label=label).percentile_ms(50) for _ in range(rounds)
                )

            server.deploy_echo()
            serve_echo = echo_p50(server.url, "Serve echo (no model)")
            server.delete()
            # The same model and calls timed inside a Ray worker with the replica's CPUs: Ray starts
            # its workers niced (15), below its own processes, which a quiet driver is not.
            in_worker = statistics.median(ray_worker_p50(model_dir, texts, n) for _ in range(rounds))
            router_us = canary_router_us(predictor)
        with plain_fastapi(model_dir, Path(tmp) / "echo", PLAIN_ECHO_APP) as echo_url:
            uvicorn_echo = echo_p50(echo_url, "uvicorn echo (no model, no Ray)")
    added = times["ours"] - times["baseline"]
    # What our app adds beyond Serve's floor and the model itself, as the replica's process runs it.
    app_ms = times["ours"] - serve_echo - in_worker
    return {
        "load_average_1min": [load_before, load_average()],
        "ours": round(times["ours"], 2),
        "baseline": round(times["baseline"], 2),
        "ratio": round(added, 2),
        "unit": "ms p50 (ours: Serve + HTTP, no batching; baseline: direct call); ratio = ms added",
        "requests_per_round": n,
        "p50_ms_serve_runs": [round(x, 2) for x in times["ours_runs"]],
        "p50_ms_direct_runs": [round(x, 2) for x in times["baseline_runs"]],
        "serve_p50_ms_default_batching": round(batched, 2),
        "added_ms_default_batching": round(batched - times["baseline"], 2),
        "note": "with the default batching (max_batch_size 16, batch_wait_timeout_s 0.002) a lone request "
        "also waits up to 2 ms for a batch to fill",
        "failed_requests": errors(reports["unbatched"]) + errors(reports["batched"]),
        "model": "MiniLM-L6, fresh 4-label head, fp32; 1 replica, replica_cpus=2",
        # The p50, split: client + HTTP + FastAPI (a uvicorn app that answers at once), Serve's
        # proxy and router hop on top of that (the same app as a Serve deployment), the model as
        # a Ray worker runs it (niced; the direct call beside it), and the rest, our app's own code
        # around the model (guard, schema, batching, metrics, drift). Sums to `ours`.
        "breakdown_ms": {
            "client_http_fastapi": round(uvicorn_echo, 2),
            "serve_proxy_router_replica": round(serve_echo - uvicorn_echo, 2),
            "model_in_ray_worker": round(in_worker, 2),
            "raylane_app_beyond_model": round(app_ms, 2),
        },
        "model_direct_ms": round(times["baseline"], 2),
        "model_ray_worker_minus_direct_ms": round(in_worker - times["baseline"], 2),
        # A canary rollout's step in front of each request: pick a version, record its outcome
        # (with the Prometheus series per version), timed in this process.
        "canary_router_us_per_request": round(router_us, 1),
    }


def ray_worker_p50(model_dir: str, texts: list[str], n: int) -> float:
    """p50 ms of `Predictor.predict([text])` timed inside a Ray actor that holds the replica's CPUs."""
    import ray

    @ray.remote(num_cpus=REPLICA_CPUS)
    def timed() -> float:
        from raylane.predictor import Predictor

        predictor = Predictor(model_dir, threads=REPLICA_CPUS)
        for i in range(20):
            predictor.predict([texts[i]])
        latencies = []
        for i in range(n):
            started = time.perf_counter()
            predictor.predict([texts[i % len(texts)]])
            latencies.append(time.perf_counter() - started)
        return statistics.median(latencies) * 1000

    p50 = ray.get(timed.remote())
    say(f"in a Ray worker: p50 {p50:.2f} ms over {n} calls")
    return p50


def canary_router_us(predictor, calls: int = 20_000) -> float:
    """Microseconds per request of a canary step's routing: `CanaryLane.pick` (5% dealt to the
    challenger) and `record` with the per-version Prometheus series, as a replica calls them."""
    from raylane.serve.canary import CanaryLane
    from raylane.serve.metrics import ReplicaMetrics
    from raylane.serve.swap import Loaded

    lane = CanaryLane(None, load=None, adopt=None, name="bench", tick_s=3600, metrics=ReplicaMetrics())
    champion, challenger = Loaded(predictor, "bench", "1", 0.0), Loaded(predictor, "bench", "2", 0.0)
    lane.challenger, lane.share, lane.step_key = challenger, 5.0, "2:0"
    started = time.perf_counter()
    for _ in range(calls):
        loaded, step = lane.pick(champion, None)
        lane.record(loaded, step, True, 0.01)
        lane.metrics.observe_version(str(loaded.version), True, 0.01)  # as Replica.record does
    lane.stop()
    us = (time.perf_counter() - started) / calls * 1e6
    say(f"canary router: {us:.1f} us per request")
    return us


@benchmark(
    "serve_batching",
    "requests/s at concurrency 32: the same replica with @serve.batch (32) vs without (1)",
    goal=">= 2x",
)
def batching(quick: bool) -> dict:
    texts, labels = holdout()
    load_before = load_average()
    seconds, warm_s, rounds = (4, 2, 1) if quick else (20, 5, 3)
    batched_fields = {"max_batch_size": 32, "max_ongoing_requests": 64}
    unbatched_fields = {"max_batch_size": 1, "max_ongoing_requests": 64}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = fresh_model(Path(tmp) / "model", labels)
        with serve_session() as server:
            reports: dict[str, list[dict]] = {"batched": [], "unbatched": []}
            times = side_by_side(
                lambda: throughput_side(
                    server.url,
                    texts,
                    seconds,
                    warm_s,
                    "batched",
                    reports["batched"],
                    lambda: server.deploy(model_dir, **batched_fields),
                ),
                lambda: throughput_side(
                    server.url,
                    texts,
                    seconds,
                    warm_s,
                    "unbatched",
                    reports["unbatched"],
                    lambda: server.deploy(model_dir, **unbatched_fields),
                ),
                rounds,
            )
            server.delete()
    return {
        **throughput_result(times, reports, "batched", "unbatched", load_before, seconds, "batched 32 vs unbatched"),
        "model": "MiniLM-L6, fresh 4-label head, fp32; 1 replica, replica_cpus=2",
    }


@benchmark(
    "serve_vs_fastapi",
    "requests/s at concurrency 32: our Serve app (defaults) vs plain FastAPI + uvicorn, same model",
    goal=">= 1.0x",
)
def versus_fastapi(quick: bool) -> dict:
    texts, labels = holdout()
    load_before = load_average()
    seconds, warm_s, rounds = (4, 2, 1) if quick else (20, 3, 3)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = fresh_model(Path(tmp) / "model", labels)
        with serve_session() as server, plain_fastapi(model_dir, Path(tmp) / "plain") as plain_url:
            server.deploy(model_dir)  # the defaults: max_batch_size 16, batch_wait_timeout_s 0.002, 1 replica
            for url in (server.url, plain_url):
                load(url, texts, CONCURRENCY, seconds=warm_s * 2)
            reports: dict[str, list[dict]] = {"serve": [], "fastapi": []}
            times = side_by_side(
                lambda: throughput_side(server.url, texts, seconds, warm_s, "serve", reports["serve"]),
                lambda: throughput_side(plain_url, texts, seconds, warm_s, "fastapi+uvicorn", reports["fastapi"]),
                rounds,
            )
            server.delete()
    return {
        **throughput_result(
            times,
            reports,
            "serve",
            "fastapi",
            load_before,
            seconds,
            "Serve default batching, replica_cpus=2, vs FastAPI+uvicorn",
        ),
        "model": "MiniLM-L6, fresh 4-label head, fp32; Serve: 1 replica, replica_cpus=2, max_batch_size 16; "
        "uvicorn: 1 process, sync endpoint, torch default threads",
    }


@benchmark(
    "serve_int8",
    "requests/s at concurrency 32: int8-quantized vs fp32 replica of the trained default model, "
    "and the accuracy the pipeline's evaluate records for int8",
    goal=">= 1.5x; <= 1.0 point accuracy lost",
)
def int8(quick: bool) -> dict:
    from raylane.config import load_config
    from raylane.evaluate.stage import run_evaluation
    from raylane.ingest.stage import run_ingest
    from raylane.runtime import init_ray
    from raylane.train.driver import fit

    texts, _ = holdout()
    load_before = load_average()
    epochs = 1 if quick else 3
    seconds, warm_s, rounds = (4, 2, 1) if quick else (20, 5, 3)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cfg = load_config(
            None,
            [
                f"output_dir={out}",
                f"train.epochs={epochs}",
                "sweep.enabled=false",
                "train.checkpoints_to_keep=1",
                "serve.quantize=int8",
            ],
        )
        init_ray()
        say(f"ingest + train ({epochs} epoch(s)) on the embedded default")
        started = time.perf_counter()
        dataset = run_ingest(cfg).dataset
        trained = fit(cfg, dataset, None, name="bench-serve-int8")
        train_s = time.perf_counter() - started
        say(f"trained in {train_s:.0f} s: {trained.model_dir}; evaluating fp32 and int8 on the test split")
        evaluation = run_evaluation(cfg, trained.model_dir, dataset, out / "evaluation")
        fp32, variant = evaluation.metrics, evaluation.serving_variant
        say(
            f"test accuracy fp32 {fp32['accuracy']:.4f}, int8 {variant.metrics['accuracy']:.4f} "
            f"({variant.delta_points['accuracy']:+.2f} points)"
        )
        with serve_session() as server:
            reports: dict[str, list[dict]] = {"int8": [], "fp32": []}
            times = side_by_side(
                lambda: throughput_side(
                    server.url,
                    texts,
                    seconds,
                    warm_s,
                    "int8",
                    reports["int8"],
                    lambda: server.deploy(trained.model_dir, quantize="int8"),
                ),
                lambda: throughput_side(
                    server.url,
                    texts,
                    seconds,
                    warm_s,
                    "fp32",
                    reports["fp32"],
                    lambda: server.deploy(trained.model_dir, quantize="none"),
                ),
                rounds,
            )
            server.delete()
    return {
        **throughput_result(times, reports, "int8", "fp32", load_before, seconds, "int8 vs fp32, batching on"),
        "holdout_accuracy_fp32": round(fp32["accuracy"], 4),
        "holdout_accuracy_int8": round(variant.metrics["accuracy"], 4),
        "holdout_accuracy_delta_points": variant.delta_points["accuracy"],
        "holdout_weighted_f1_fp32": round(fp32["weighted_f1"], 4),
        "holdout_weighted_f1_int8": round(variant.metrics["weighted_f1"], 4),
        "holdout_weighted_f1_delta_points": variant.delta_points["weighted_f1"],
        "train_epochs": epochs,
        "train_seconds": round(train_s, 1),
        "model": f"MiniLM-L6 trained {epochs} epoch(s) on the embedded default; 1 replica, replica_cpus=2, "
        "max_batch_size 16",
    }
