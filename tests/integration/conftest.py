from pathlib import Path

import pytest

from raylane.config import PROJECT_ROOT, load_config


@pytest.fixture(scope="session")
def smoke_cfg_factory(tmp_path_factory, tiny_model):
    def make(*overrides: str, out: Path | None = None):
        out = out or tmp_path_factory.mktemp("out")
        return load_config(PROJECT_ROOT / "configs" / "smoke.yaml",
                           [f"model.name_or_path={tiny_model}", f"output_dir={out}", *overrides])

    return make


@pytest.fixture(scope="session")
def smoke_dataset(ray_session, smoke_cfg_factory):
    """The embedded data, ingested once with the tiny model's tokenizer."""
    from ingest.stage import run as ingest

    cfg = smoke_cfg_factory()
    return ingest(cfg).dataset
