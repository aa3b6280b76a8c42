"""The chat app while a generation takes seconds, on real Ray Serve over loopback HTTP: the
generation runs off the replica's event loop (probes answer at once, other keys' requests are
taken, the replica is never restarted), a key over its concurrency limit gets a 429 and a full
queue a 503, each with Retry-After, and what was admitted is answered."""

import threading
import time

import pytest
import requests

from raylane.http import free_port, wait_until_ok
from raylane.serve.app import ServeArgs, build_app
from raylane.tasks.saved import SavedTask
from tests.tiny_model import make_tiny_causal_lm

APP = "raylane-chat-admission"
KEYS = ("admission-key-one-0123456789", "admission-key-two-0123456789")
LONG = 480  # tokens: seconds of generation for the 24-layer tiny model on one CPU
HELLO = [{"role": "user", "content": "hello"}]


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    target = make_tiny_causal_lm(tmp_path_factory.mktemp("slow-chat") / "model", layers=24)
    generation = {"max_new_tokens": 4, "temperature": 0.0, "top_p": 1.0, "stop": []}
    SavedTask("causal_lm", [], {"generation": generation}).write(target)
    return target


@pytest.fixture(scope="module")
def deploy(ray_session, slow_model, tmp_path_factory):
    """deploy(**settings) -> base URL: the app (re)deployed with those settings on one port."""
    from ray import serve

    keys = tmp_path_factory.mktemp("secrets") / "keys"
    keys.write_text("\n".join(KEYS) + "\n")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"

    def deployed(**settings) -> str:
        args = ServeArgs(
            model_uri=str(slow_model),
            task="causal_lm",
            api_keys_file=str(keys),
            max_prompt_tokens=16,
            max_new_tokens_ceiling=LONG,
            **settings,
        )
        serve.run(build_app(args), name=APP, route_prefix="/")
        wait_until_ok(f"{base}/healthz")
        return base

    yield deployed
    serve.delete(APP)
    serve.shutdown()


class Long(threading.Thread):
    """A greedy chat request for LONG tokens, in the background: its answer and when it ended."""

    def __init__(self, url: str, key: str):
        super().__init__()
        self.url, self.key = url, key
        self.answer: requests.Response | None = None
        self.ended = 0.0

    def run(self) -> None:
        body = {"messages": HELLO, "max_tokens": LONG, "temperature": 0}
        self.answer = requests.post(f"{self.url}/v1/chat/completions", json=body, headers=auth(self.key), timeout=120)
        self.ended = time.perf_counter()


def short(url: str, key: str) -> requests.Response:
    body = {"messages": HELLO, "max_tokens": 2}
    return requests.post(f"{url}/v1/chat/completions", json=body, headers=auth(key), timeout=120)


def test_a_long_generation_leaves_probes_answering_and_a_second_key_served(deploy):
    url = deploy(max_concurrent_per_key=1, retry_after_s=2.0)
    loaded_at = requests.get(f"{url}/model", headers=auth(KEYS[0]), timeout=30).json()["loaded_at"]
    long = Long(url, KEYS[0])
    started = time.perf_counter()
    long.start()
    time.sleep(0.5)  # the long request is in the replica, generating
    refused = short(url, KEYS[0])  # the same key, over its limit of 1
    refused_at = time.perf_counter()
    other: list[requests.Response] = []  # another key: taken, and answered once the generation is done
    asking = threading.Thread(target=lambda: other.append(short(url, KEYS[1])))
    asking.start()
    probes: list[float] = []
    while long.is_alive() and len(probes) < 200:
        sent = time.perf_counter()
        assert requests.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"
        probes.append(time.perf_counter() - sent)
        time.sleep(0.05)
    long.join()
    asking.join()
    assert long.answer is not None and long.answer.status_code == 200, long.answer
    assert long.answer.json()["usage"]["completion_tokens"] == LONG
    seconds = long.ended - started
    assert seconds > 2.0, f"the long generation took {seconds:.1f} s: too short to show anything"
    assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
    assert "max_concurrent_per_key" in refused.json()["detail"] and refused_at < long.ended
    assert [o.status_code for o in other] == [200]
    # On the event loop, a probe waited for the whole generation (seconds).
    assert probes and max(probes) < 1.0, f"slowest probe {max(probes):.2f} s during a {seconds:.1f} s generation"
    after = requests.get(f"{url}/model", headers=auth(KEYS[0]), timeout=30).json()["loaded_at"]
    assert after == loaded_at  # the same replica: never restarted
    print(f"{len(probes)} probes during a {seconds:.1f} s generation: slowest {max(probes) * 1000:.0f} ms")


def test_a_full_queue_is_a_503_with_retry_after_and_what_was_queued_is_answered(deploy):
    url = deploy(max_batch_size=1, max_ongoing_requests=1, max_queued_requests=1, retry_after_s=3.0)
    long = Long(url, KEYS[0])
    long.start()
    time.sleep(0.5)  # the replica holds its one request
    queued: list[requests.Response] = []
    waiting = threading.Thread(target=lambda: queued.append(short(url, KEYS[1])))
    waiting.start()
    time.sleep(0.5)  # the proxy queues its one request
    sent = time.perf_counter()
    refused = short(url, KEYS[1])
    refused_in, still_generating = time.perf_counter() - sent, long.is_alive()
    long.join()
    waiting.join()
    assert refused.status_code == 503 and refused.headers.get("retry-after") == "3", refused
    assert refused_in < 1.0 and still_generating  # at once, not after the queue moved
    assert long.answer is not None and long.answer.status_code == 200
    assert [q.status_code for q in queued] == [200]  # admitted, so answered


def test_a_client_that_stops_sending_its_body_is_cut_at_the_timeout(deploy):
    import socket
    from urllib.parse import urlparse

    url = deploy(body_timeout_s=1.0)
    where = urlparse(url)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {where.netloc}\r\nAuthorization: Bearer {KEYS[0]}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    with socket.create_connection((where.hostname, where.port), timeout=30) as client:
        client.sendall(head.encode() + b'{"messages": ')  # 13 of the 100 bytes, then nothing
        sent = time.perf_counter()
        reply = client.recv(4096)
        seconds = time.perf_counter() - sent
        while chunk := client.recv(4096):  # the rest of the answer, until the server closes
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"serve.body_timeout_s" in reply and 0.8 < seconds < 10, seconds
    assert short(url, KEYS[0]).status_code == 200  # and the server keeps serving


def test_short_requests_sent_beside_a_long_one_finish_first(deploy):
    """Continuous batching (the default scheduler): 31 short requests sent while a long one
    generates join its batch and leave it long before it ends; probes answer throughout."""
    url = deploy(max_batch_size=32)
    long = Long(url, KEYS[0])
    long.start()
    time.sleep(0.5)
    ended: list[tuple[float, int]] = []

    def ask(i: int) -> None:
        answer = short(url, KEYS[i % 2])
        ended.append((time.perf_counter(), answer.status_code))

    askers = [threading.Thread(target=ask, args=(i,)) for i in range(31)]
    for asker in askers:
        asker.start()
    probes = []
    while any(a.is_alive() for a in askers):
        sent = time.perf_counter()
        assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
        probes.append(time.perf_counter() - sent)
        time.sleep(0.1)
    for asker in askers:
        asker.join()
    still_generating = long.is_alive()
    long.join()
    assert [status for _, status in ended] == [200] * 31
    assert still_generating and max(t for t, _ in ended) < long.ended  # every short one left before the long one
    assert long.answer is not None and long.answer.json()["usage"]["completion_tokens"] == LONG
    assert max(probes) < 1.0
