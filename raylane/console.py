"""Lines for the person watching the console, and keeping everyone else's off it.

By default a run's console holds raylane's own lines (stage summaries, progress inside epochs,
one line per trial event) and real warnings. The libraries under it each print more: Ray Data
per-iteration bars and "Starting execution" lines in every process that reads a dataset,
transformers' weight-loading and shard-writing bars and the report of the new head's missing
weights (expected: the head is what fine-tuning adds), MLflow's "View run at" links and system
metrics notices, Ray Train's per-report lines. `--verbose` shows all of it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSE_ENV = "RAYLANE_VERBOSE"  # set by --verbose; read here and by every process that inherits it

# Environment defaults read by the libraries as each process starts: set before Ray starts, a
# local Ray's workers inherit them; a cluster job gets them from configs/job_runtime_env.yaml.
QUIET_ENV = {
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    # Tune's new output engine prints the sweep's configuration box and paths at any verbosity;
    # the legacy one, at the sweep's verbose=0, prints nothing (the sweep prints its own lines).
    "RAY_AIR_NEW_OUTPUT": "0",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers follows it for its own bars
    "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Deprecation notices libraries raise about each other (Ray Train's own use of a Ray Data
    # option, PEFT's of a transformers method) are for their developers, not for our users.
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
}


RAY_DATA_LOGGING = "ray_data_logging.yaml"  # in raylane.configs: Ray Data's console at WARNING


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def quiet_libraries() -> None:
    """Unless --verbose: the environment defaults above, for this process and the Ray workers it
    starts. A value the user set stays."""
    if verbose():
        return
    from raylane.resources import packaged

    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    if os.environ["PYTHONWARNINGS"] == QUIET_ENV["PYTHONWARNINGS"]:  # read at start-up: this process is running
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(packaged(f"configs/{RAY_DATA_LOGGING}")))


def quiet_worker() -> None:
    """Inside a Ray worker, unless --verbose: INFO records stop at the root logger (Ray Train's
    per-report lines are logged under a file path, outside the `ray` logger tree)."""
    if not verbose():
        logging.getLogger().setLevel(logging.WARNING)


def say(line: str) -> None:
    """Write one line and flush it (a job's log shows it at once).

    Not `print`: inside a Ray Train worker, Train v2 swaps `print` for one that logs the line and
    also prints it, so every epoch line reached the console twice.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
