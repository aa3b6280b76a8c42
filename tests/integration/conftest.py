from pathlib import Path

import pytest

from raylane.config import load_config
from tests.paths import REPO_ROOT


@pytest.fixture(scope="session")
def smoke_cfg_factory(tmp_path_factory, tiny_model):
    def make(*overrides: str, out: Path | None = None):
        out = out or tmp_path_factory.mktemp("out")
        return load_config(
            REPO_ROOT / "configs" / "smoke.yaml", [f"model.name_or_path={tiny_model}", f"output_dir={out}", *overrides]
        )

    return make


@pytest.fixture(scope="session")
def smoke_dataset(ray_session, smoke_cfg_factory):
    """The embedded data, ingested once with the tiny model's tokenizer."""
    from raylane.ingest.stage import run_ingest

    cfg = smoke_cfg_factory()
    return run_ingest(cfg).dataset


@pytest.fixture(scope="session")
def trained_classifier(smoke_dataset, smoke_cfg_factory):
    """A tiny classifier trained once on the embedded data (the real loop in local mode, 2 epochs:
    enough to clearly beat a random head), for every test that needs *a* trained model rather
    than a training run of its own. Nothing may write into its model_dir."""
    from raylane.train.driver import fit

    cfg = smoke_cfg_factory("resources.num_workers=0", "train.epochs=2")
    return fit(cfg, smoke_dataset, name="shared-classifier")
