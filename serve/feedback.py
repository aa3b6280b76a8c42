"""Feedback from production: labelled examples that later feed retraining, so nothing about them
may be forged, leak personal data, or fill a disk.

- Prediction ids are signed (HMAC-SHA256 with a secret from the environment or a file) over the
  scored text's hash and an expiry: only an id this deployment issued, quoted with the text it was
  issued for and before it expires, is accepted back, whichever replica issued it; and only once,
  by a record of used ids kept in the sink, which outlives replicas and restarts.
- Texts are PII-masked before they are kept.
- Each replica buffers its records and writes them in batches to its own partition,
  `<sink>/date=YYYY-MM-DD/replica=<id>/feedback-<time>-<n>.jsonl` (or .parquet), through a
  temporary file and a rename, so a reader never sees half a file, up to a size quota that counts
  what the sink already holds.

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
    """`<nonce>.<expiry>.<signature>`: random, bound to the text it was issued for and to an
    expiry (Unix seconds), and verifiable by any replica holding the same secret. The signature
    (HMAC-SHA256) covers the nonce, the expiry and the text's SHA-256, so an id quoted with another
    text, or after its expiry, or with its expiry changed, is refused. One use each is the sink's
    to enforce (`UsedIds`): the id alone cannot know it was used. Without a secret (feedback off)
    ids are random and verify as nothing."""

    NONCE_HEX = 24
    SIGNATURE_HEX = 32

    def __init__(self, secret: bytes | None, ttl_s: float = 7 * 86400):
        self.secret, self.ttl_s = secret, ttl_s

    def _sign(self, nonce: str, expiry: str, item: str | bytes) -> str:
        message = f"{nonce}.{expiry}.{_digest(item)}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[: self.SIGNATURE_HEX]

    def issue(self, item: str | bytes, now: float | None = None) -> str:
        """An id for the prediction made for `item` (the text as scored, or an image's bytes)."""
        nonce = secrets.token_hex(self.NONCE_HEX // 2)
        if not self.secret:
            return nonce
        expiry = str(int((time.time() if now is None else now) + self.ttl_s))
        return f"{nonce}.{expiry}.{self._sign(nonce, expiry, item)}"

    def problem(self, prediction_id: str, item: str | bytes, now: float | None = None) -> str:
        """Why `prediction_id` is not accepted with `item`; empty if it is."""
        parsed = parse_id(prediction_id)
        if not (self.secret and parsed):
            return "prediction_id is not one this deployment issued"
        nonce, expiry = parsed
        if not hmac.compare_digest(prediction_id.rsplit(".", 1)[1], self._sign(nonce, str(expiry), item)):
            # A forged id and a real one quoted with another text look the same from here.
            return "prediction_id is not one this deployment issued for this text"
        if expiry <= (time.time() if now is None else now):
            return "prediction_id has expired (serve.feedback_ttl_s)"
        return ""

    def valid(self, prediction_id: str, item: str | bytes, now: float | None = None) -> bool:
        return not self.problem(prediction_id, item, now)


def parse_id(prediction_id: str) -> tuple[str, int] | None:
    """(nonce, expiry) of an id shaped like one `PredictionIds` signs, else None."""
    parts = prediction_id.split(".")
    if len(parts) != 3:
        return None
    nonce, expiry, signature = parts
    shaped = (
        len(nonce) == PredictionIds.NONCE_HEX
        and len(signature) == PredictionIds.SIGNATURE_HEX
        and _is_hex(nonce + signature)
        and expiry.isascii()
        and expiry.isdigit()
        and len(expiry) <= 12
    )
    return (nonce, int(expiry)) if shaped else None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _digest(item: str | bytes) -> str:
    return hashlib.sha256(item.encode() if isinstance(item, str) else item).hexdigest()


class QuotaExceeded(Exception):
    """The sink holds its quota of feedback (serve.feedback_max_mb)."""


class AlreadyUsed(Exception):
    """This prediction id has had its feedback: one use each."""


class UsedIds:
    """One use per prediction id, across replicas and restarts: a marker file per used id,
    `<sink>/_used/expires=YYYY-MM-DD/_<nonce>`, kept in the sink itself (local or object storage,
    wherever the feedback goes). Grouped by the day the ids expire, so a day is dropped whole once
    every id in it has expired: an expired id is refused before anyone asks here, so the record
    stays as small as the ids still alive. Names begin with `_`, which ingest skips when it reads
    the sink back."""

    DIRECTORY = "_used"

    def __init__(self, uri: str):
        import pyarrow.fs as pafs

        from raylane.sources import filesystem

        self.fs, self.root = filesystem(f"{uri.rstrip('/')}/{self.DIRECTORY}")
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self._claimed: dict[str, int] = {}  # nonce -> expiry, claimed by this process: no round trip
        self._lock = threading.Lock()
        self.forget_expired()

    def claim(self, nonce: str, expiry: int) -> bool:
        """True the first time an id is claimed, by any replica, before or after a restart; False
        after that."""
        with self._lock:
            if nonce in self._claimed:
                return False
            self._claimed[nonce] = expiry
        try:
            return self._mark(nonce, expiry)
        except BaseException:  # storage failed: the id was not used, so it may be tried again
            with self._lock:
                self._claimed.pop(nonce, None)
            raise

    def _mark(self, nonce: str, expiry: int) -> bool:
        import os

        import pyarrow.fs as pafs

        directory = f"{self.root}/expires={time.strftime('%Y-%m-%d', time.gmtime(expiry))}"
        path = f"{directory}/_{nonce}"
        self.fs.create_dir(directory, recursive=True)
        if self._local:  # create-if-absent is atomic here, so two processes cannot both win
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                return False
            return True
        # pyarrow has no create-if-absent for object storage: look, then write. Two replicas
        # claiming the same id within that one round trip can both accept it.
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            return False
        with self.fs.open_output_stream(path):
            pass
        return True

    def forget_expired(self, now: float | None = None) -> int:
        """Drops the days whose ids have all expired; returns how many."""
        import pyarrow.fs as pafs

        now = time.time() if now is None else now
        today = time.strftime("%Y-%m-%d", time.gmtime(now))
        with self._lock:
            self._claimed = {n: e for n, e in self._claimed.items() if e > now}
        selector = pafs.FileSelector(self.root, recursive=False, allow_not_found=True)
        days = [
            info.path
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory and info.base_name.startswith("expires=")
        ]
        expired = [d for d in days if d.rsplit("expires=", 1)[1] < today]  # ISO dates sort as days
        for directory in expired:
            self.fs.delete_dir(directory)
        return len(expired)


class FeedbackSink:
    """Buffers records and writes them in batches to this replica's partition of the sink; takes
    each prediction id once (`UsedIds`); keeps the sink within its quota, counted from what the
    sink holds (all replicas, every earlier run), so a restart does not reset it."""

    FORGET_EVERY_S = 3600.0

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
        self.used = UsedIds(self.uri)
        self.files = 0
        self._stored = self.stored_bytes()  # what the sink held when last measured
        self._pending = 0  # bytes added since, not yet in a measurement
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_periodically, name="feedback-flush", daemon=True)
        self._thread.start()

    @property
    def bytes_used(self) -> int:
        return self._stored + self._pending

    def add(self, record: dict[str, Any], prediction_id: str = "") -> None:
        """Buffers `record`; with a `prediction_id`, only the first time that id is given (else
        `AlreadyUsed`). Over the quota: `QuotaExceeded`, and the id is not used up."""
        size = _size(record)
        with self._lock:
            if self.bytes_used + size > self.max_bytes:
                raise QuotaExceeded
        if prediction_id:
            parsed = parse_id(prediction_id)
            if parsed is None or not self.used.claim(*parsed):
                raise AlreadyUsed
        with self._lock:
            self._pending += size
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
        stored = self.stored_bytes()  # others' writes too: replicas share the quota
        with self._lock:
            self._stored = stored
            self._pending -= sum(_size(r) for r in records)
        return len(records)

    def stored_bytes(self) -> int:
        """Bytes of feedback files the sink holds, every replica's and every day's."""
        import pyarrow.fs as pafs

        from raylane.sources import filesystem

        fs, root = filesystem(self.uri)
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        return sum(i.size for i in infos if i.type == pafs.FileType.File and i.base_name.startswith("feedback-"))

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
        forgotten = time.monotonic()
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
                if time.monotonic() - forgotten > self.FORGET_EVERY_S:
                    forgotten = time.monotonic()
                    self.used.forget_expired()
            except Exception:  # a storage hiccup must not kill the thread; the next flush retries
                import logging

                logging.getLogger("ray.serve").exception("writing feedback to %s failed", self.uri)

    def close(self) -> None:
        self._stop.set()
        self.flush()


def _size(record: dict[str, Any]) -> int:
    return len(json.dumps(record, ensure_ascii=False).encode())


def _encode(records: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), buffer)
        return buffer.getvalue()
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
