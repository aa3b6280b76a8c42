"""A real S3-compatible server on loopback for tests: moto in server mode, as a subprocess.

Not a mock object: pyarrow, Ray Data (and their subprocesses) talk plain HTTP S3 to it.

    with s3_server(tmp_path) as s3:
        s3.make_bucket("data")
        fs = s3.filesystem()               # pyarrow.fs.S3FileSystem pointed at the server
        os.environ.update(s3.env())        # before ray.init / spawning subprocesses

``env()`` is enough for ``pyarrow.fs.FileSystem.from_uri("s3://bucket/key")`` and for
``ray.data.read_*/write_*("s3://...")`` in a fresh process: pyarrow 25 honours
``AWS_ENDPOINT_URL`` including an ``http://`` scheme (verified by experiment). Set the
env BEFORE ``ray.init``: Ray workers inherit the environment of the raylet started by
``ray.init``; updating ``os.environ`` afterwards leaves writes from workers going to AWS.
Bucket names must be valid S3 names (3-63 chars): moto rejects e.g. "b1".
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from raylane.http import free_port, wait_until_ok


@dataclass(frozen=True)
class S3Endpoint:
    url: str  # "http://127.0.0.1:PORT"
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``, the form pyarrow's ``endpoint_override`` takes without a scheme."""
        return self.url.split("://", 1)[1]

    def env(self) -> dict[str, str]:
        """Env vars that point pyarrow / Ray Data / boto3 (in this or child processes) here."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            # Never reach for EC2 instance metadata (slow timeouts on a machine without it).
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def filesystem(self, **kwargs):
        """A ``pyarrow.fs.S3FileSystem`` on this server; ``kwargs`` pass through."""
        import pyarrow.fs

        return pyarrow.fs.S3FileSystem(
            endpoint_override=self.host_port,
            scheme="http",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            **kwargs,
        )

    def make_bucket(self, name: str) -> None:
        # pyarrow refuses to create buckets unless asked to explicitly.
        self.filesystem(allow_bucket_creation=True).create_dir(name)


def _log_tail(log: Path, n: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


@contextlib.contextmanager
def s3_server(tmp_dir, timeout: float = 30.0) -> Iterator[S3Endpoint]:
    """Start ``moto.server`` on a free loopback port; yield its :class:`S3Endpoint`; stop it."""
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    endpoint = S3Endpoint(url=f"http://127.0.0.1:{port}")
    log = tmp_dir / f"moto_server_{port}.log"
    env = {**os.environ, **endpoint.env()}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        try:
            # moto's S3 ListBuckets answers GET / with 200, no auth needed.
            wait_until_ok(endpoint.url + "/", timeout_s=timeout, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(
                f"moto server on {endpoint.url} did not come up ({err}); log tail:\n" + _log_tail(log)
            ) from None
        yield endpoint
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
