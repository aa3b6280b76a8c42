"""Shared fixtures. Everything is real: a local Ray, an `mlflow server` process on loopback,
a real (tiny, random) BERT with the real tokenizer, real HTTP.

Tiers come from where a test lives, not from decorators: `tests/unit/...` (no cluster),
`tests/integration/...` (marked `integration`: a real Ray, MLflow server or Serve), `tests/e2e/...`
(marked `e2e`: the real CLI); a file named `test_*_slow.py` is also marked `slow`. Inside each
tier the folders mirror the source tree (tests/unit/ingest/ tests raylane.ingest)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raylane.config import load_config
from tests.mlflow_server import running_mlflow_server
from tests.paths import REPO_ROOT
from tests.tiny_model import make_tiny_causal_lm, make_tiny_image_model, make_tiny_llama, make_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


TESTS = Path(__file__).resolve().parent
TIERS = ("integration", "e2e")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).resolve()
        tier = path.relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if path.stem.endswith("_slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-causal-lm"))


@pytest.fixture(scope="session")
def tiny_image_model(tmp_path_factory) -> Path:
    return make_tiny_image_model(tmp_path_factory.mktemp("tiny-resnet"))


@pytest.fixture(scope="session")
def smoke_overrides(tiny_model) -> list[str]:
    return [f"model.name_or_path={tiny_model}"]


@pytest.fixture
def make_cfg(tmp_path, tiny_model):
    """The smoke config on the tiny model, writing under this test's tmp dir."""

    def make(*overrides: str):
        return load_config(
            REPO_ROOT / "configs" / "smoke.yaml",
            [f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'out'}", *overrides],
        )

    return make


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the integration tests (starting one costs ~10 s)."""
    import ray

    from raylane.runtime import init_ray

    init_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_session) -> str:
    """The session's Ray, for `python -m raylane` subprocesses to join through $RAY_ADDRESS
    (raylane.runtime.init_ray connects there): a private local Ray costs each CLI run ~10 s to
    start and more to stop, and on 2 cores it competes with the session's own."""
    return ray_session.get_runtime_context().gcs_address


@pytest.fixture
def serve_cleanup(ray_session):
    """Serve off in the session's Ray after the test. Its controller is detached, so an app that
    a `run` deployed outlives the run (and the CLI process), holding CPUs and the HTTP proxy on its
    port; that port is fixed once Serve has started in a cluster, so the next test's would never
    answer."""
    yield
    from ray import serve

    serve.shutdown()  # a no-op where Serve never started


@pytest.fixture
def cli_env(ray_address, serve_cleanup):
    """The environment of a `python -m raylane` subprocess that joins the session's Ray (and
    whose Serve app, if any, serve_cleanup removes afterwards)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_ADDRESS"] = ray_address
    return env


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real tracking server process on loopback (SQLite store, proxied artifacts)."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri
