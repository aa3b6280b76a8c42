"""The door in front of the HTTP app: an ASGI middleware that refuses a request before anything
of it is parsed, and counts every answer.

In order, for each HTTP request:
1. no valid API key where one is needed: 401, before the body is read;
2. a declared body (Content-Length) over `max_request_bytes`: 413, before the body is read;
3. a key that already has `max_per_key` requests in flight on this replica: 429 with
   Retry-After (one client cannot take all of a replica's slots; the proxies' bounded queue,
   `serve.max_queued_requests`, answers 503 when all clients together are too many);
4. the body is read here: one that grows past the limit is a 413 as soon as it does (the app
   would turn an error raised mid-read into a 400), so at most `max_request_bytes` of it is ever
   held; one not all sent within `body_timeout_s` of the headers is a 408;
5. otherwise the app gets the body (FastAPI: validation, then the route).
The metrics label each answer with the route template it matched, not the raw path, so random
paths cannot create new Prometheus series.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from raylane.serve.auth import CLIENT, client_of, key_digests, presented_key
from raylane.serve.metrics import replica_metrics

# Probes and load balancers carry no key.
OPEN_PATHS = frozenset({"/healthz"})
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
UNMATCHED = "unmatched"
# What `_read_body` gives for a body that did not all arrive in time.
TIMED_OUT = b"<timed out>"
# Set in the request's ASGI scope by a streamed answer that failed after its 200 went out.
FAILED_MIDWAY = "raylane.failed_midway"


class RequestGuard:
    """`digests`: the API keys' digests, empty when auth is off (a callable, so the replica loads
    them once, lazily, in its own process). `routes`: the app's routes, to name the one a refused
    request was for. `max_per_key`: requests one key may have in flight here (0: no limit).
    `body_timeout_s`: how long a body may take to arrive, headers to last byte.
    `observe(route, status, seconds)` records an answer."""

    def __init__(
        self,
        app,
        *,
        digests: Callable[[], tuple[bytes, ...]],
        max_request_bytes: int,
        routes: list,
        public_docs: bool = True,
        max_per_key: int = 0,
        retry_after_s: float = 1.0,
        body_timeout_s: float = 30.0,
        observe: Callable[[str, int, float], None] | None = None,
    ):
        self.app, self.digests, self.max_request_bytes, self.routes = app, digests, max_request_bytes, routes
        self.max_per_key, self.retry_after = max_per_key, str(math.ceil(retry_after_s))
        self.body_timeout_s = body_timeout_s
        self.in_flight: Counter[bytes] = Counter()  # per key digest; one event loop, so no lock
        self.open_paths = OPEN_PATHS | (DOC_PATHS if public_docs else frozenset())
        self.observe = observe or (lambda route, status, seconds: None)

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, answered = time.perf_counter(), {"status": 500}

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
            await send(message)

        key = None
        try:
            key, refusal = self._admission(scope)
            if refusal:
                await _respond(recording_send, *refusal)
                return
            body = await self._read_body(receive)
            if body is None:
                await _respond(recording_send, 413, self._too_large())
                return
            if body is TIMED_OUT:
                detail = f"the request body did not arrive within {self.body_timeout_s:g} s (serve.body_timeout_s)"
                await _respond(recording_send, 408, detail, {"connection": "close"})
                return
            CLIENT.set(client_of(scope))  # for the route, in this request's context
            await self.app(scope, _replay(body, receive), recording_send)
        finally:
            if key:
                self.in_flight[key] -= 1
                if not self.in_flight[key]:
                    del self.in_flight[key]
            status = 500 if scope.get(FAILED_MIDWAY) else answered["status"]
            self.observe(self._route(scope), status, time.perf_counter() - started)

    async def _read_body(self, receive) -> bytes | None:
        """The whole body; None as soon as it passes the limit (the rest is never read);
        TIMED_OUT when it has not all come `body_timeout_s` after the headers (a client that sends
        part of a body, or a byte now and then, holds a slot only that long)."""
        import asyncio

        chunks, size, more = [], 0, True
        deadline = time.monotonic() + self.body_timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return TIMED_OUT
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    def _admission(self, scope: dict[str, Any]) -> tuple[bytes | None, tuple[int, str, dict[str, str]] | None]:
        """(the key now counted in flight, or None; the refusal, or None)."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        key = None
        if scope["path"] not in self.open_paths:
            key = presented_key(headers.get("authorization"), self.digests())
            if key is None:
                return None, (401, "unauthorized", {"www-authenticate": "Bearer"})
        declared = headers.get("content-length", "")
        if declared.strip().isdigit() and int(declared) > self.max_request_bytes:
            return None, (413, self._too_large(), {})
        if not (key and self.max_per_key):
            return None, None
        if self.in_flight[key] >= self.max_per_key:
            detail = (
                f"this API key has {self.max_per_key} requests in flight on this replica already "
                "(serve.max_concurrent_per_key); retry after the Retry-After seconds"
            )
            return None, (429, detail, {"retry-after": self.retry_after})
        self.in_flight[key] += 1
        return key, None

    def _too_large(self) -> str:
        return f"request body over {self.max_request_bytes} bytes (serve.max_request_bytes)"

    def _route(self, scope: dict[str, Any]) -> str:
        """The template of the route the request matched (FastAPI puts it in the scope), else the
        first route that matches its path, else "unmatched"."""
        route = scope.get("route")
        if route is not None and getattr(route, "path", None):
            return route.path
        from starlette.routing import Match

        for candidate in self.routes:
            # Only routes have a template; a mounted or included router (FastAPI 0.12x wraps
            # include_router in one) has none of its own.
            path = getattr(candidate, "path", None)
            if path and candidate.matches(scope)[0] == Match.FULL:
                return path
        return UNMATCHED


def failed_midway(scope: dict[str, Any]) -> None:
    """Counts the request as a 500, though its status line said 200: a stream that failed part way."""
    scope[FAILED_MIDWAY] = True


def _replay(body: bytes, receive):
    """A receive that gives the app the body already read, then whatever comes after it (a
    disconnect), from the connection."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replayed


async def _respond(send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _observe(route: str, status: int, seconds: float) -> None:
    replica_metrics().observe_request(route, status, seconds)


def guarded_api(args, description: str) -> FastAPI:
    """A FastAPI app behind the request guard: keys and body size are checked before anything
    of a request is parsed, and every answer is counted. `args`: the app's `ServeArgs`."""
    api = FastAPI(title="raylane", description=description)
    api.add_middleware(
        RequestGuard,
        digests=functools.partial(key_digests, args.api_keys_env, args.api_keys_file),
        max_request_bytes=args.max_request_bytes,
        routes=api.router.routes,
        public_docs=args.public_docs,
        max_per_key=args.max_concurrent_per_key,
        retry_after_s=args.retry_after_s,
        body_timeout_s=args.body_timeout_s,
        observe=_observe,
    )
    api.add_exception_handler(RequestValidationError, answer_validation_error)
    return api


def validation_faults(errors: list[dict]) -> list[dict]:
    """FastAPI's 422 details without the values it echoes: a NaN or an infinity there made the
    answer itself fail to serialise (a 500), and a long input was sent back whole. Where and
    what is wrong is enough."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")} for e in errors]


async def answer_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": validation_faults(list(error.errors()))}, status_code=422)
