"""A load generator for a deployed app: N concurrent clients posting to /predict for a while (or
for a number of requests), counting statuses and latencies. Used by the tests and benchmarks,
and by operators: `python -m raylane.serve.loadtest http://127.0.0.1:8000 --concurrency 32 --seconds 60`.

One asyncio process (aiohttp, which Ray Serve already depends on): far less CPU per request than
a thread per client, which matters when the client shares a small machine with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

DEFAULT_TEXTS = [
    "Transfer learning with transformers for text classification.",
    "A convolutional network that segments satellite images.",
    "Deploying and monitoring models in production with feature stores.",
    "Gradient boosting on tabular data, explained.",
]


@dataclass
class LoadReport:
    seconds: float
    statuses: Counter = field(default_factory=Counter)  # status code, or the exception's class name
    latencies_s: list[float] = field(default_factory=list)  # of successful requests

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def success_rate(self) -> float:
        return self.ok / self.requests if self.requests else 0.0

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "success_rate": round(self.success_rate, 5),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "seconds": round(self.seconds, 2),
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p95_ms": round(self.percentile_ms(95), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
        }


async def _load(
    url: str,
    concurrency: int,
    seconds: float | None,
    requests: int | None,
    texts_per_request: int,
    headers: dict[str, str] | None,
    texts: list[str],
    timeout_s: float,
) -> LoadReport:
    import aiohttp

    report = LoadReport(0.0)
    remaining = [requests if requests is not None else float("inf")]
    started = time.perf_counter()
    deadline = started + seconds if seconds else float("inf")

    async def client(worker: int, session: aiohttp.ClientSession) -> None:
        i = worker
        while time.perf_counter() < deadline and remaining[0] > 0:
            remaining[0] -= 1
            body = {"texts": [texts[(i + j) % len(texts)] for j in range(texts_per_request)]}
            i += concurrency
            sent = time.perf_counter()
            try:
                async with session.post(f"{url}/predict", json=body, headers=headers) as response:
                    await response.read()
                    report.statuses[response.status] += 1
                    if response.status == 200:
                        report.latencies_s.append(time.perf_counter() - sent)
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                report.statuses[type(err).__name__] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        await asyncio.gather(*(client(w, session) for w in range(concurrency)))
    report.seconds = time.perf_counter() - started
    return report


def run_load(
    url: str,
    concurrency: int = 8,
    seconds: float | None = None,
    requests: int | None = None,
    texts_per_request: int = 1,
    headers: dict[str, str] | None = None,
    texts: list[str] | None = None,
    timeout_s: float = 60.0,
) -> LoadReport:
    """Keep `concurrency` requests in flight until `seconds` pass or `requests` have been sent."""
    if seconds is None and requests is None:
        raise ValueError("give seconds, requests or both")
    return asyncio.run(
        _load(
            url.rstrip("/"),
            concurrency,
            seconds,
            requests,
            texts_per_request,
            headers,
            texts or DEFAULT_TEXTS,
            timeout_s,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m raylane.serve.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="base URL of the app, e.g. http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--api-key", default="", help="sent as Authorization: Bearer <key>")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    report = run_load(
        args.url, args.concurrency, args.seconds, texts_per_request=args.texts_per_request, headers=headers
    )
    print(json.dumps(report.summary(), indent=1))


if __name__ == "__main__":
    main()
