"""serve_llm: the chat app (`task: causal_lm`, POST /v1/chat/completions) under load, on one
replica with replica_cpus=2 on a local Ray (bench.serve's session and redeploys).

Generated tokens/s at concurrency 8 (8 asyncio clients in this process, each posting one chat
request after another, greedy, max_tokens MAX_TOKENS; tokens counted from each answer's
`usage.completion_tokens`) with batching (max_batch_size 8, batch_wait_timeout_s 0.01) against
one request at a time (max_batch_size 1), the app redeployed for each side of each round, sides
alternating (bench.harness.side_by_side); plus the p50 time to first token of streamed requests
(stream: true, sent one after another to the batched deployment: from sending to the first
content chunk).

The model: $BENCH_LLM_MODEL (a model directory, hub id or .gguf that `raylane.models` resolves to
a directory holding a causal LM and a tokenizer with a chat template); without it, the tests'
tiny random 2-layer Llama (hidden 64) built on the fly, whose figures measure the serving path
(HTTP, Serve, batching, generate's per-step overhead) more than a model. A directory without
`raylane_task.json` is served through a copy of links to its files plus one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import benchmark, side_by_side
from bench.serve import load_average, say, serve_session

CONCURRENCY = 8
MAX_TOKENS = 64
MODEL_ENV = "BENCH_LLM_MODEL"
QUESTIONS = [
    "What is transfer learning?",
    "Name three uses of a convolutional network.",
    "How do I monitor a model in production?",
    "Explain gradient boosting in one sentence.",
    "What does a tokenizer do?",
    "Why batch requests on a GPU?",
    "What is a learning rate schedule?",
    "Give an example of data drift.",
]


def model_dir(directory: Path) -> tuple[str, str]:
    """(a servable causal_lm directory, what it is)."""
    from raylane.tasks.saved import TASK_FILE, SavedTask

    named = os.environ.get(MODEL_ENV, "")
    if not named:
        # The tests' tiny model: importable because benchmarks run from the checkout.
        from tests.tiny_model import make_tiny_causal_lm

        source = make_tiny_causal_lm(directory / "tiny")
        what = "tiny random 2-layer Llama (hidden 64, MiniLM tokenizer), fp32"
    else:
        from raylane.models import resolve_model_source

        source = Path(resolve_model_source(named))
        if not source.is_dir():
            raise SystemExit(f"${MODEL_ENV}={named}: not a local model directory")
        what = named
    if (source / TASK_FILE).is_file():
        return str(source), what
    generation = {"max_new_tokens": MAX_TOKENS, "temperature": 0.0, "top_p": 1.0, "stop": []}
    return linked_copy(source, directory / "served", SavedTask("causal_lm", [], {"generation": generation})), what


def linked_copy(source: Path, copy: Path, saved) -> str:
    """`copy`: links to the files of the model directory `source`, with `saved` as its task file."""
    from raylane.tasks.saved import TASK_FILE

    copy.mkdir()
    for item in source.iterdir():
        if item.name != TASK_FILE:
            (copy / item.name).symlink_to(item.resolve())
    saved.write(copy)
    return str(copy)


def body(i: int, stream: bool = False) -> dict:
    question = QUESTIONS[i % len(QUESTIONS)]
    return {"messages": [{"role": "user", "content": question}], "max_tokens": MAX_TOKENS, "stream": stream}


async def _tokens_per_s(url: str, seconds: float) -> dict:
    import aiohttp

    done = {"requests": 0, "failed": 0, "tokens": 0}
    started = time.perf_counter()
    deadline = started + seconds

    async def client(worker: int, session: aiohttp.ClientSession) -> None:
        i = worker
        while time.perf_counter() < deadline:
            async with session.post(f"{url}/v1/chat/completions", json=body(i)) as response:
                answer = await response.json()
            if response.status != 200:
                done["failed"] += 1
                continue
            done["requests"] += 1
            done["tokens"] += answer["usage"]["completion_tokens"]
            i += CONCURRENCY

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        await asyncio.gather(*(client(w, session) for w in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started  # the last answers finish after the deadline: count them in
    return {**done, "seconds": round(elapsed, 2), "tokens_per_s": done["tokens"] / elapsed}


async def _first_token_s(url: str, n: int) -> list[float]:
    import aiohttp

    waits = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for i in range(n):
            sent = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=body(i, stream=True)) as response:
                first = None
                async for line in response.content:
                    text = line.decode().strip()
                    if first is None and text.startswith("data: {"):
                        if json.loads(text[6:])["choices"][0]["delta"].get("content"):
                            first = time.perf_counter() - sent
                if first is None:
                    raise RuntimeError(f"stream {i} ended without content (status {response.status})")
                waits.append(first)
    return waits


@benchmark(
    "serve_llm",
    f"generated tokens/s at concurrency {CONCURRENCY} of the chat app: @serve.batch (8) vs one request at a time; "
    "p50 time to first token of streams",
    goal=">= 2x",
)
def serve_llm(quick: bool) -> dict:
    load_before = load_average()
    seconds, warm_s, rounds, streams = (6, 2, 1, 10) if quick else (20, 5, 3, 30)
    fields = {"task": "causal_lm", "max_ongoing_requests": 64, "max_new_tokens_ceiling": MAX_TOKENS}
    sides = {
        "batched": {"scheduler": "static", "max_batch_size": 8, "batch_wait_timeout_s": 0.01},
        "unbatched": {"scheduler": "static", "max_batch_size": 1},
    }
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        served, what = model_dir(Path(tmp))
        say(f"serving {what}")
        with serve_session() as server:

            def side(name: str) -> float:
                server.deploy(served, **fields, **sides[name])
                asyncio.run(_tokens_per_s(server.url, warm_s))
                run = asyncio.run(_tokens_per_s(server.url, seconds))
                say(f"{name}: {run['tokens_per_s']:.1f} tokens/s ({run['requests']} requests, {run['failed']} failed)")
                runs[name].append(run)
                return run["tokens_per_s"]

            times = side_by_side(lambda: side("batched"), lambda: side("unbatched"), rounds)
            server.deploy(served, **fields, **sides["batched"])
            asyncio.run(_first_token_s(server.url, 3))  # warm-up
            first_token = asyncio.run(_first_token_s(server.url, streams))
            server.delete()
    failed = sum(r["failed"] for rs in runs.values() for r in rs)
    if failed:
        raise RuntimeError(f"{failed} requests failed: {runs}")
    return {
        "load_average_1min": [load_before, load_average()],
        "ours": round(times["ours"], 1),
        "baseline": round(times["baseline"], 1),
        "ratio": round(times["ours"] / times["baseline"], 3),
        "unit": f"generated tokens/s at concurrency {CONCURRENCY}, max_tokens {MAX_TOKENS}, greedy "
        "(batched 8 vs 1 at a time)",
        "tokens_per_s_runs_batched": [round(x, 1) for x in times["ours_runs"]],
        "tokens_per_s_runs_unbatched": [round(x, 1) for x in times["baseline_runs"]],
        "requests_batched": sum(r["requests"] for r in runs["batched"]),
        "requests_unbatched": sum(r["requests"] for r in runs["unbatched"]),
        "seconds_per_run": seconds,
        "ttft_p50_ms_stream": round(statistics.median(first_token) * 1000, 1),
        "ttft_streams": streams,
        "note_ttft": "streams sent one after another to the batched deployment: from sending to the first content "
        "chunk",
        "model": f"{what}; 1 replica, replica_cpus=2",
    }


# serve_llm_mixed: each client's requests take these max_tokens in turn, so short and long answers
# are always in flight together (greedy; a model's end of turn may end one sooner).
MIXED_TOKENS = (8, 16, 32, 64, 128, 8, 256, 8)
MIXED_SIDES = {
    "continuous": {"scheduler": "continuous"},
    # The same model saved with evaluate.dtype bfloat16 (see `in_dtype`).
    "continuous_bf16": {"scheduler": "continuous"},
    "static": {"scheduler": "static", "batch_wait_timeout_s": 0.01},
    "one_at_a_time": {"scheduler": "static", "max_batch_size": 1},
}


def in_dtype(served: str, dtype: str, directory: Path) -> str:
    """A copy of the model directory `served` (links) whose saved generation settings name `dtype`."""
    from raylane.tasks.saved import read_saved_task

    saved = read_saved_task(served)
    generation = {**saved.extras.get("generation", {}), "dtype": dtype}
    return linked_copy(Path(served), directory / f"served-{dtype}", saved.with_extras(generation=generation))


async def _burst(url: str, concurrency: int, per_client: int) -> dict:
    """`concurrency` clients each sending `per_client` chat requests one after another (mixed
    max_tokens): generated tokens/s over the whole burst, and each request's latency by max_tokens."""
    import aiohttp

    latencies: dict[int, list[float]] = {}
    tokens, failed = 0, 0
    started = time.perf_counter()

    async def client(worker: int, session) -> None:
        nonlocal tokens, failed
        for k in range(per_client):
            i = worker * per_client + k
            limit = MIXED_TOKENS[i % len(MIXED_TOKENS)]
            question = {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}
            sent = time.perf_counter()
            async with session.post(
                f"{url}/v1/chat/completions", json={"messages": [question], "max_tokens": limit}
            ) as response:
                answer = await response.json()
            if response.status != 200:
                failed += 1
                continue
            latencies.setdefault(limit, []).append(time.perf_counter() - sent)
            tokens += answer["usage"]["completion_tokens"]

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=1800)) as session:
        await asyncio.gather(*(client(w, session) for w in range(concurrency)))
    seconds = time.perf_counter() - started
    return {
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "tokens": tokens,
        "failed": failed,
        "latencies": latencies,
    }


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@benchmark(
    "serve_llm_mixed",
    "generated tokens/s of the chat app under mixed max_tokens (8-256) at concurrency 32 and 8: continuous "
    "batching vs one request at a time (and static @serve.batch); an 8-token answer's p95 latency under load vs alone",
    goal=">= 4x at concurrency 32; 8-token p95 under load < 2x alone",
)
def serve_llm_mixed(quick: bool) -> dict:
    load_before = load_average()
    rounds = 1 if quick else 2
    # 32 clients: one burst, every request in flight at once; 8: three each, so new requests keep
    # joining as others finish.
    per_client = {32: 1, 8: 3}
    fields = {"task": "causal_lm", "max_ongoing_requests": 64, "max_new_tokens_ceiling": max(MIXED_TOKENS)}
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        served, what = model_dir(Path(tmp))
        models = {side: served for side in MIXED_SIDES} | {"continuous_bf16": in_dtype(served, "bfloat16", Path(tmp))}
        say(f"serving {what}")
        with serve_session() as server:
            server.deploy(served, **fields, **MIXED_SIDES["continuous"], max_batch_size=32)
            alone = []
            for i in range(12):  # an 8-token answer with nothing else in flight
                alone += asyncio.run(_alone(server.url, i))
            for concurrency in (32, 8):
                runs: dict[str, list[dict]] = {side: [] for side in MIXED_SIDES}
                for _ in range(rounds):
                    for side, settings in MIXED_SIDES.items():
                        batch = {} if side == "one_at_a_time" else {"max_batch_size": concurrency}
                        server.deploy(models[side], **fields, **settings, **batch)
                        asyncio.run(_burst(server.url, min(concurrency, 4), 1))  # warm-up
                        run = asyncio.run(_burst(server.url, concurrency, per_client[concurrency]))
                        if run["failed"]:
                            raise RuntimeError(f"{side}: {run['failed']} requests failed")
                        short = run["latencies"].get(8, [])
                        say(
                            f"concurrency {concurrency} {side}: {run['tokens_per_s']:.1f} tokens/s, "
                            f"{run['tokens']} tokens in {run['seconds']:.1f} s; 8-token p95 {_p(short, 0.95):.2f} s"
                        )
                        runs[side].append(run)
                for side, side_runs in runs.items():
                    rates = [r["tokens_per_s"] for r in side_runs]
                    short = [x for r in side_runs for x in r["latencies"].get(8, [])]
                    result[f"c{concurrency}_{side}_tokens_per_s_runs"] = [round(x, 1) for x in rates]
                    result[f"c{concurrency}_{side}_tokens_per_s"] = round(statistics.median(rates), 1)
                    result[f"c{concurrency}_{side}_8_token_p50_s"] = round(_p(short, 0.5), 3)
                    result[f"c{concurrency}_{side}_8_token_p95_s"] = round(_p(short, 0.95), 3)
            server.delete()
    ours, baseline = result["c32_continuous_tokens_per_s"], result["c32_one_at_a_time_tokens_per_s"]
    return {
        "load_average_1min": [load_before, load_average()],
        "ours": ours,
        "baseline": baseline,
        "ratio": round(ours / baseline, 3),
        # evaluate.dtype bfloat16 batched vs the default (float32) one at a time: what a user gets
        # from both settings against what one request at a time does at its best on a CPU.
        "ratio_bf16": round(result["c32_continuous_bf16_tokens_per_s"] / baseline, 3),
        "unit": "generated tokens/s at concurrency 32, a burst of 32 requests with max_tokens cycling "
        f"{list(MIXED_TOKENS)}, greedy (continuous batching, max_batch_size 32, vs one at a time; float32, "
        "and continuous_bf16: the model saved with evaluate.dtype bfloat16)",
        "alone_8_token_p50_s": round(_p(alone, 0.5), 3),
        "alone_8_token_p95_s": round(_p(alone, 0.95), 3),
        **result,
        "rounds": rounds,
        "requests_per_client": per_client,
        "model": f"{what}; 1 replica, replica_cpus=2",
    }


async def _alone(url: str, i: int) -> list[float]:
    import aiohttp

    question = {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        sent = time.perf_counter()
        async with session.post(f"{url}/v1/chat/completions", json={"messages": [question], "max_tokens": 8}) as r:
            await r.json()
            if r.status != 200:
                raise RuntimeError(f"an 8-token request alone failed: {r.status}")
        return [time.perf_counter() - sent]


@contextlib.contextmanager
def generator_in_process():
    """(the benchmark's model loaded in this process with 2 torch threads, what it is)."""
    from raylane.generate import Generator

    with tempfile.TemporaryDirectory() as tmp:
        served, what = model_dir(Path(tmp))
        yield Generator(served, threads=2), what


def _burst_in_process(generator, release: bool) -> float:
    """Generated tokens/s of one burst of 32 mixed requests (MIXED_TOKENS) through a continuous
    batcher in its own thread, after this thread has generated (as a replica's canary does) and,
    with `release`, handed back its OpenMP team (`raylane.openmp`)."""
    import threading

    from raylane.continuous import ContinuousBatcher, Request
    from raylane.generate import Sampling
    from raylane.openmp import release_thread_pool

    prompts = [generator.chat_prompt([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]) for i in range(32)]
    generator.generate([prompts[0]], [Sampling(8)])  # this thread's team exists, as after a replica's canary
    if release:
        release_thread_pool()
    batcher = ContinuousBatcher(generator, 32).start()
    answers, done = [], threading.Semaphore(0)

    def on_done(answer) -> None:
        answers.append(answer)
        done.release()

    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        batcher.submit(Request(prompt, Sampling(MIXED_TOKENS[i % len(MIXED_TOKENS)]), on_done))
    for _ in prompts:
        done.acquire()
    seconds = time.perf_counter() - started
    batcher.stop()
    return sum(a.completion_tokens for a in answers) / seconds


@benchmark(
    "llm_thread_handoff",
    "generated tokens/s of a continuous batcher's burst (32 requests, max_tokens cycling 8-256, greedy, in process, "
    "2 threads) after the loading thread generated: its OpenMP team released (as replicas now do) vs kept",
    goal="no slower than the batcher in a process with one OpenMP team",
)
def llm_thread_handoff(quick: bool) -> dict:
    with generator_in_process() as (generator, what):
        result = side_by_side(
            lambda: _burst_in_process(generator, release=True),
            lambda: _burst_in_process(generator, release=False),
            rounds=1 if quick else 2,
        )
    return {
        **result,
        "ratio": round(result["ours"] / result["baseline"], 3),
        "unit": "generated tokens/s, one burst of 32 requests with max_tokens cycling "
        f"{list(MIXED_TOKENS)} through raylane.continuous in its own thread, 2 torch threads",
        "model": what,
    }


BATCH_PROMPTS, BATCH_ROWS, BATCH_TOKENS = 64, 16, 128


def _batch_generate(answer) -> float:
    started = time.perf_counter()
    answers = answer()
    return sum(a.completion_tokens for a in answers) / (time.perf_counter() - started)


@benchmark(
    "llm_batch_generate",
    f"generated tokens/s of batch generation (evaluation, raylane predict) over {BATCH_PROMPTS} chat prompts, "
    f"greedy, max_new_tokens {BATCH_TOKENS}, in process: a continuous batch of {BATCH_ROWS} rows decoded in the "
    f"caller's thread (raylane.continuous.answer_all, now used) vs static batches of {BATCH_ROWS} "
    "(Generator.generate_all, used before)",
    goal="faster than static batches where answers end at different lengths; the same answers",
)
def llm_batch_generate(quick: bool) -> dict:
    from raylane.continuous import answer_all
    from raylane.generate import Sampling

    with generator_in_process() as (generator, what):
        prompts = [
            generator.chat_prompt([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
            for i in range(BATCH_PROMPTS)
        ]
        prompts.sort(key=len)  # as both callers order them: less left padding in a static batch
        sampling = Sampling(BATCH_TOKENS)
        static = generator.generate_all(prompts, sampling, BATCH_ROWS)
        continuous = answer_all(generator, prompts, sampling, BATCH_ROWS)
        result = side_by_side(
            lambda: _batch_generate(lambda: answer_all(generator, prompts, sampling, BATCH_ROWS)),
            lambda: _batch_generate(lambda: generator.generate_all(prompts, sampling, BATCH_ROWS)),
            rounds=1 if quick else 2,
        )
    lengths = sorted(a.completion_tokens for a in static)
    return {
        **result,
        "ratio": round(result["ours"] / result["baseline"], 3),
        "same_answers": sum(a == b for a, b in zip(static, continuous)),
        "of": len(static),
        "answer_tokens_min_median_max": [lengths[0], lengths[len(lengths) // 2], lengths[-1]],
        "unit": f"generated tokens/s, {BATCH_PROMPTS} prompts, greedy, max_new_tokens {BATCH_TOKENS}, "
        f"{BATCH_ROWS} rows at a time, 2 torch threads",
        "model": what,
    }
