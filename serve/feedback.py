"""Feedback from production: labelled examples that later feed retraining, so nothing about them
may be forged, leak personal data, or fill a disk.

- Prediction ids are signed (HMAC-SHA256 with a secret from the environment or a file): only an
  id this deployment issued is accepted back, whichever replica issued it.
- Texts are PII-masked before they are kept.
- Each replica buffers its records and writes them in batches to its own partition,
  `<sink>/date=YYYY-MM-DD/replica=<id>/feedback-<time>-<n>.jsonl` (or .parquet), through a
  temporary file and a rename, so a reader never sees half a file, up to a size quota.

Ingest reads the sink back as it is: `data.source=<sink> data.text_fields=[text] data.label_field=label`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from raylane.config import ConfigError


def load_secret(env_name: str = "", file: str = "") -> bytes:
    """The signing secret; a named source that holds nothing is an error naming its key."""
    import os

    if env_name:
        value = os.environ.get(env_name, "").strip()
        if not value:
            raise ConfigError("serve.feedback_secret_env", f"names ${env_name}, which is unset or empty")
        return value.encode()
    if file:
        try:
            value = Path(file).expanduser().read_text().strip()
        except OSError as err:
            raise ConfigError("serve.feedback_secret_file", f"cannot read {file} ({err.strerror})") from None
        if not value:
            raise ConfigError("serve.feedback_secret_file", f"{file} is empty")
        return value.encode()
    raise ConfigError(
        "serve.feedback_secret_env",
        "feedback needs a secret to sign prediction ids: set serve.feedback_secret_env or serve.feedback_secret_file",
    )


class PredictionIds:
    """`<nonce>.<signature>`: random, and verifiable by any replica holding the same secret.
    Without a secret (feedback off) ids are random and verify as nothing."""

    NONCE_HEX = 24

    def __init__(self, secret: bytes | None):
        self.secret = secret

    def _sign(self, nonce: str) -> str:
        return hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self) -> str:
        nonce = secrets.token_hex(self.NONCE_HEX // 2)
        return f"{nonce}.{self._sign(nonce)}" if self.secret else nonce

    def valid(self, prediction_id: str) -> bool:
        nonce, dot, signature = prediction_id.partition(".")
        if not (self.secret and dot and len(nonce) == self.NONCE_HEX):
            return False
        return hmac.compare_digest(signature, self._sign(nonce))


class QuotaExceeded(Exception):
    """This replica has written its share of feedback (serve.feedback_max_mb)."""


class FeedbackSink:
    """Buffers records and writes them in batches to this replica's partition of the sink."""

    def __init__(
        self,
        uri: str,
        fmt: str = "jsonl",
        replica: str = "",
        max_bytes: int = 64 * 2**20,
        flush_rows: int = 100,
        flush_s: float = 5.0,
    ):
        self.uri, self.fmt, self.max_bytes = uri.rstrip("/"), fmt, max_bytes
        self.replica = replica or uuid.uuid4().hex[:12]
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.bytes_used, self.files = 0, 0
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_periodically, name="feedback-flush", daemon=True)
        self._thread.start()

    def add(self, record: dict[str, Any]) -> None:
        size = len(json.dumps(record, ensure_ascii=False).encode())
        with self._lock:
            if self.bytes_used + size > self.max_bytes:
                raise QuotaExceeded
            self.bytes_used += size
            self._buffer.append(record)
            full = len(self._buffer) >= self.flush_rows
        if full:
            self.flush()

    def flush(self) -> int:
        """Write what is buffered as one file; returns the records written."""
        with self._lock:
            records, self._buffer = self._buffer, []
            if not records:
                return 0
            self.files += 1
            number = self.files
        self._write(records, number)
        return len(records)

    def _write(self, records: list[dict[str, Any]], number: int) -> None:
        from raylane.sources import filesystem

        now = time.gmtime()
        partition = f"date={time.strftime('%Y-%m-%d', now)}/replica={self.replica}"
        name = f"feedback-{time.strftime('%H%M%S', now)}-{number:06d}.{self.fmt}"
        fs, path = filesystem(f"{self.uri}/{partition}/{name}")
        directory = path.rsplit("/", 1)[0]
        fs.create_dir(directory, recursive=True)
        temporary = f"{directory}/.{name}.tmp"  # a leading dot: readers skip it until the rename
        with fs.open_output_stream(temporary) as stream:
            stream.write(_encode(records, self.fmt))
        fs.move(temporary, path)

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # a storage hiccup must not kill the thread; the next flush retries
                import logging

                logging.getLogger("ray.serve").exception("writing feedback to %s failed", self.uri)

    def close(self) -> None:
        self._stop.set()
        self.flush()


def _encode(records: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), buffer)
        return buffer.getvalue()
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
