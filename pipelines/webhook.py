"""POST /loop/trigger: an alert asks the loop for a cycle (an Alertmanager webhook receiver, or
anything that can POST JSON). Only a signed request is taken: `Authorization: Bearer <secret>`
(what Alertmanager's `http_config.authorization` sends) or `X-Raylane-Signature: sha256=<hex>`,
the HMAC-SHA256 of the body under the secret. A taken request is queued for the loop's next look
and wakes it; the loop's guards (cool-down, budget, one cycle at a time) still decide."""

from __future__ import annotations

import hashlib
import hmac
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from raylane.pipelines.triggers import alert_reason

PATH = "/loop/trigger"
MAX_BODY = 1 << 20  # an Alertmanager payload of many alerts is tens of KB


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signed(secret: bytes, headers, body: bytes) -> bool:
    bearer = headers.get("Authorization", "")
    if bearer.startswith("Bearer ") and hmac.compare_digest(bearer[7:].strip().encode(), secret):
        return True
    return hmac.compare_digest(headers.get("X-Raylane-Signature", ""), signature(secret, body))


class Webhook:
    """The receiver, in a thread of the loop's process; `reasons` holds what it took."""

    def __init__(self, host: str, port: int, secret: bytes, wake: threading.Event):
        self.reasons: queue.Queue[str] = queue.Queue()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                if self.path.split("?", 1)[0] != PATH:
                    return self._answer(404, f"only POST {PATH} is served here")
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._answer(413, f"the body is over {MAX_BODY} bytes")
                body = self.rfile.read(length)
                if not signed(secret, self.headers, body):
                    return self._answer(401, "not signed with the loop's secret (loop.webhook_secret_env)")
                try:
                    reason = alert_reason(body)
                except ValueError as err:  # json.JSONDecodeError is one
                    return self._answer(400, f"not a JSON object: {err}")
                if reason:
                    outer.reasons.put(reason)
                    wake.set()
                self._answer(202, f"queued: {reason}" if reason else "nothing firing; nothing queued")

            def _answer(self, status: int, message: str) -> None:
                data = (message + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # the loop prints what it does with a trigger
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}{PATH}"
        threading.Thread(target=self.server.serve_forever, name="loop-webhook", daemon=True).start()

    def take(self) -> list[str]:
        taken = []
        while not self.reasons.empty():
            taken.append(self.reasons.get_nowait())
        return taken

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
