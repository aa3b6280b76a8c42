"""The guard in front of the app, driven through the ASGI interface itself: what it refuses it
refuses before reading a byte of the body, and it names every answer by its route template."""

import asyncio
import json

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from raylane.serve.auth import _digest
from raylane.serve.guard import RequestGuard, answer_validation_error


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str]
    temperature: float = Field(0.0, ge=0, le=2)


def _app(
    observed: list, limit: int = 100, public_docs: bool = True, keys=("k1",), max_per_key: int = 0, body_timeout_s=30.0
):
    api = FastAPI()

    @api.post("/predict")
    def predict(body: Body) -> dict:
        return {"n": len(body.texts)}

    @api.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    digests = tuple(_digest(k) for k in keys)
    api.add_middleware(
        RequestGuard,
        digests=lambda: digests,
        max_request_bytes=limit,
        routes=api.router.routes,
        public_docs=public_docs,
        max_per_key=max_per_key,
        retry_after_s=2.5,
        body_timeout_s=body_timeout_s,
        observe=lambda route, status, s: observed.append((route, status)),
    )
    api.add_exception_handler(RequestValidationError, answer_validation_error)  # as guarded_api does
    return api


def _call(app, method: str, path: str, body_chunks=(), headers=None):
    """One request through ASGI: (status, response body, how many body chunks the app pulled)."""
    return asyncio.run(_asgi(app, method, path, body_chunks, headers))


async def _asgi(
    app, method: str, path: str, body_chunks=(), headers=None, answer_headers: dict | None = None, stall=False
):
    """`_call`'s request, awaited; `stall`: the client sends `body_chunks`, says more is coming,
    and sends nothing again."""
    headers = {"content-type": "application/json", **{k.lower(): v for k, v in (headers or {}).items()}}
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("t", 80),
        "client": ("c", 1),
        "root_path": "",
        "asgi": {"version": "3.0", "spec_version": "2.4"},  # a stream needs no disconnect listener
    }
    chunks, pulled, sent = list(body_chunks), [0], []

    async def receive():
        pulled[0] += 1
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks) or stall}
        if stall:
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    status = start["status"]
    if answer_headers is not None:
        answer_headers.update({k.decode(): v.decode() for k, v in start["headers"]})
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, pulled[0]


KEY = {"Authorization": "Bearer k1"}


def test_no_key_is_a_401_before_any_of_the_body_is_read():
    observed = []
    app = _app(observed)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "k1"}):
        status, body, pulled = _call(app, "POST", "/predict", [b"{}"], headers)
        assert (status, json.loads(body), pulled) == (401, {"detail": "unauthorized"}, 0)
    assert _call(app, "GET", "/healthz")[0] == 200  # open to probes
    assert observed[-1] == ("/healthz", 200) and observed[0] == ("/predict", 401)


def test_a_declared_body_over_the_limit_is_a_413_before_it_is_read():
    app = _app([])
    status, body, pulled = _call(app, "POST", "/predict", [b"x" * 10], {**KEY, "Content-Length": "101"})
    assert (status, pulled) == (413, 0) and b"max_request_bytes" in body


def test_a_streamed_body_is_cut_off_once_it_passes_the_limit():
    app = _app([])
    chunks = [b'{"texts": ["' + b"x" * 40] + [b"x" * 40] * 50
    status, _, pulled = _call(app, "POST", "/predict", chunks, KEY)
    assert status == 413 and pulled <= 4  # three chunks pass 100 bytes: no more are read


def test_within_the_limit_the_app_validates_and_answers():
    observed = []
    app = _app(observed)
    assert _call(app, "POST", "/predict", [b'{"texts": ["a", "b"]}'], KEY)[:2] == (200, b'{"n":2}')
    assert _call(app, "POST", "/predict", [b'{"texts": ["a"], "extra": 1}'], KEY)[0] == 422
    assert observed == [("/predict", 200), ("/predict", 422)]


def test_metrics_name_the_route_template_never_the_raw_path():
    observed = []
    app = _app(observed)
    for path in ("/nope", "/predict/../../etc", "/a" * 50):
        assert _call(app, "GET", path, headers=KEY)[0] == 404
    assert _call(app, "GET", "/random", headers={})[0] == 401
    assert {route for route, _ in observed} == {"unmatched"}


def test_docs_can_need_the_key_too():
    assert _call(_app([]), "GET", "/openapi.json")[0] == 200
    assert _call(_app([], public_docs=False), "GET", "/openapi.json")[0] == 401
    assert _call(_app([], public_docs=False), "GET", "/openapi.json", headers=KEY)[0] == 200


def test_without_keys_auth_is_off():
    app = _app([], keys=())
    assert _call(app, "POST", "/predict", [b'{"texts": []}'])[0] == 200


def test_a_422_names_the_fault_and_never_echoes_the_value():
    # NaN, Infinity and 1e400 (an infinity to Python's json) once made FastAPI's own 422 fail to
    # serialise the value it echoed: a 500. A long value came back whole.
    app = _app([], limit=10_000)
    for raw in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        status, body, _ = _call(app, "POST", "/predict", [b'{"texts": ["a"], "temperature": ' + raw + b"}"], KEY)
        assert status == 422, (raw, body)
        (fault,) = json.loads(body)["detail"]
        assert fault["loc"] == ["body", "temperature"] and "input" not in fault
    status, body, _ = _call(app, "POST", "/predict", [b'{"texts": "' + b"y" * 5000 + b'"}'], KEY)
    assert status == 422 and b"yyyy" not in body and len(body) < 300


def test_a_stream_that_fails_after_its_200_is_counted_as_an_error():
    from fastapi import Request
    from fastapi.responses import StreamingResponse

    from raylane.serve.guard import failed_midway

    observed: list = []
    api = _app(observed)

    @api.get("/stream/{outcome}")
    def stream(raw: Request, outcome: str):
        fail = outcome == "fails"

        def chunks():
            yield "data: 1\n\n"
            if fail:
                failed_midway(raw.scope)
                yield 'data: {"error": {}}\n\ndata: [DONE]\n\n'

        return StreamingResponse(chunks(), media_type="text/event-stream")

    assert _call(api, "GET", "/stream/succeeds", headers=KEY)[0] == 200
    status, body, _ = _call(api, "GET", "/stream/fails", headers=KEY)
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert observed == [("/stream/{outcome}", 200), ("/stream/{outcome}", 500)]


def test_a_key_over_its_concurrency_limit_gets_a_429_with_retry_after_and_other_keys_do_not():
    observed: list = []
    api = _app(observed, keys=("k1", "k2"), max_per_key=2)
    held: list[asyncio.Event] = []

    @api.get("/hold")
    async def hold() -> dict:
        held.append(release := asyncio.Event())
        await release.wait()
        return {"held": True}

    async def scenario():
        k1, k2 = {"Authorization": "Bearer k1"}, {"Authorization": "Bearer k2"}
        holding = [asyncio.ensure_future(_asgi(api, "GET", "/hold", headers=k1)) for _ in range(2)]
        while len(held) < 2:
            await asyncio.sleep(0.001)
        refused_headers: dict = {}
        refused = await _asgi(api, "GET", "/hold", headers=k1, answer_headers=refused_headers)
        other = asyncio.ensure_future(_asgi(api, "GET", "/hold", headers=k2))  # another key is not held back
        while len(held) < 3:
            await asyncio.sleep(0.001)
        for release in held:
            release.set()
        answered = await asyncio.gather(*holding, other)
        again = await asyncio.wait_for(_asgi(api, "POST", "/predict", [b'{"texts": []}'], k1), 5)  # slots freed
        return refused, refused_headers, answered, again

    refused, refused_headers, answered, again = asyncio.run(scenario())
    assert refused[0] == 429 and b"max_concurrent_per_key" in refused[1] and refused[2] == 0  # body never read
    assert refused_headers["retry-after"] == "3"  # whole seconds, rounded up
    assert [a[0] for a in answered] == [200, 200, 200] and again[0] == 200
    assert observed.count(("/hold", 429)) == 1


def test_a_body_that_stops_arriving_is_a_408_at_the_timeout():
    observed: list = []
    app = _app(observed, body_timeout_s=0.3)

    async def timed():
        started = asyncio.get_running_loop().time()
        answer = await asyncio.wait_for(_asgi(app, "POST", "/predict", [b'{"texts": ['], KEY, stall=True), 10)
        return answer, asyncio.get_running_loop().time() - started

    (status, body, _), seconds = asyncio.run(timed())
    assert status == 408 and b"serve.body_timeout_s" in body
    assert 0.25 < seconds < 2.0
    assert observed == [("/predict", 408)]
    assert _call(app, "POST", "/predict", [b'{"texts": ["a"]}'], KEY)[0] == 200  # a whole body in time is taken
