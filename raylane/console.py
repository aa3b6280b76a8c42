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


# Lines Ray forwards to the driver's console that a user cannot act on, each with why it is safe
# to hide. `--verbose` shows them.
RAY_NOISE = (
    # Ray Train's controller starts its PreemptionWatcher with restarts and its arguments in the
    # object store; Ray's core worker warns about its own actor (ray-project/ray#57733).
    "has constructor arguments in the object store and max_restarts > 0",
    # The raylet counts a Train worker group, Tune trials and Ray Data actors starting together
    # on a 2-CPU node as "4x the maximum expected startup concurrency": they start as asked.
    "PYTHON worker processes have been started on node",
    # The GCS kills an actor whose node or owner is already gone (a finished trial's workers).
    "Failed to kill actor",
    # Ray Train v2 removing a finished run's placement group, already gone with its job.
    "PlacementGroupCleaner",
)
# Ray's note that a new local cluster uses token auth (its default): nothing to act on.
RAY_TOKEN_NOTE = "Token authentication is enabled for this Ray cluster"


def is_ray_noise(line: str) -> bool:
    return any(noise in line for noise in RAY_NOISE)


def hide_ray_noise() -> None:
    """Drop RAY_NOISE from the worker and raylet lines Ray prints on the driver, and Ray's token
    note from its log. Ray has no public filter for forwarded lines: this wraps the function its
    log listener calls for each batch (`ray._private.worker.print_worker_logs`, which the
    printing code looks up by name at each call); if a Ray release renames it, the lines show
    again and nothing breaks."""
    import ray._private.worker as ray_worker

    print_lines = getattr(ray_worker, "print_worker_logs", None)
    if getattr(print_lines, "hides_noise", False):
        return  # once per process: init_ray runs again after each ray.shutdown
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: RAY_TOKEN_NOTE not in record.getMessage()
    )
    if print_lines is None:
        return

    def print_worker_logs(data, print_file, ignore_prefix=False):
        actor = data.get("actor_name") or ""  # the "(PlacementGroupCleaner pid=...)" prefix is not in the line
        lines = [line for line in data.get("lines", []) if not is_ray_noise(f"{actor} {line}")]
        if lines:
            print_lines({**data, "lines": lines}, print_file, ignore_prefix)

    print_worker_logs.hides_noise = True
    ray_worker.print_worker_logs = print_worker_logs


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
