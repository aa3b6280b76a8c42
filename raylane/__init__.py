"""raylane: a Ray-native, end-to-end ML pipeline, tracked in MLflow.

One import namespace. This folder is the shared core (config, tracking and registry, datasets,
models, inference); each stage has a top-level folder of its own in the repository and imports
as `raylane.<stage>` (ingest/ is `raylane.ingest`, and so on for train, tune, evaluate, serve and
pipelines). Stages depend on the core, never on `raylane.pipelines`, which composes them.
"""

from pathlib import Path

__version__ = "0.1.0"

# Installed from a wheel, the stage packages sit inside this one. In a source checkout (an
# editable install, or the directory `ray job submit --working-dir .` uploads to a cluster where
# raylane is not installed) they are the checkout's top-level folders: putting the checkout on
# this package's path makes `raylane.ingest` resolve to ./ingest there, with nothing to install.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "ingest" / "__init__.py").is_file():
    __path__.append(str(_checkout))
