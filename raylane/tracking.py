"""MLflow tracking, in one place.

Every value written here passes through `raylane.redact`, so credentials inside URIs (a tracking
server's user:password, an object store's key) never reach a param, a tag or an artifact.

Everything goes through `MlflowClient` with an explicit tracking URI and run id (a `RunRef`),
never through MLflow's process-global "active run": the same calls then work in the driver, in a
Tune trial and in a Ray Train worker on another node, and a resumed worker keeps logging to the
run it started in. Nesting is MLflow's own `mlflow.parentRunId` tag, which the UI renders as a tree.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig
from raylane.redact import redact, remember, remembered

# MLflow caps a param value at 6000 characters; longer values are cut, not rejected.
_PARAM_LIMIT = 6000

# What the experiment is, for MLflow 3's UI: builds that choose the view per experiment open one
# without it as GenAI (traces, token counts), all empty for a training pipeline. MLflow 3.17
# instead keeps one view per browser, which the link ui_command prints switches (UI_WORKFLOW).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
EXPERIMENT_DESCRIPTION = """raylane pipeline runs. Each `run-...` parent run nests its stages:
ingest (the dataset's counts and quarantine), train or sweep (one child run per trial), evaluate
(test-split metrics, confusion matrix, curves) and register (the gate's verdict, the registered
version). The parent's columns hold the headline: test metric, gate, champion version, wall time."""


def tracking_uri(cfg: PipelineConfig) -> str:
    """The config's server, else $MLFLOW_TRACKING_URI, else SQLite under output_dir."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{cfg.output_path / 'mlflow.db'}"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@dataclass(frozen=True)
class RunRef:
    """A picklable handle on one MLflow run: what crosses process and node boundaries."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    source: str = "raylane"  # the command that started the pipeline run: every nested run shows it
    # The values `redact` masks by value (from `${VAR}`s), taken where the config was loaded. A
    # worker gets the config as an object and never expands it: unpickling its RunRef is how its
    # own `redact` learns them. It holds nothing the worker's config does not already hold.
    masked: tuple[str, ...] = field(default_factory=remembered, repr=False, compare=False)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)  # what unpickling does without this method; frozen or not
        remember(state.get("masked", ()))

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(str(v))[:_PARAM_LIMIT]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # log_batch takes at most 100 params a call
            _client(self.tracking_uri).log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(
        self,
        metrics: dict[str, float],
        step: int | None = None,
        model_id: str | None = None,
        dataset: tuple[str, str] | None = None,
    ) -> None:
        """`model_id` links the values to a LoggedModel (its page lists them); `dataset` is the
        (name, digest) of the dataset input they were measured on."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        items = [Metric(k, float(v), now, step or 0, model_id, name, digest) for k, v in metrics.items()]
        _client(self.tracking_uri).log_batch(self.run_id, metrics=items)

    def log_model_output(self, model_id: str, step: int = 0) -> None:
        """Show a LoggedModel in this run's Models column (the run produced it, or is its parent)."""
        from mlflow.entities import LoggedModelOutput

        _client(self.tracking_uri).log_outputs(self.run_id, [LoggedModelOutput(model_id, step)])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        _client(self.tracking_uri).log_batch(self.run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        client = _client(self.tracking_uri)
        if Path(path).is_dir():
            client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Any, file_name: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=str), file_name)

    def log_text(self, text: str, file_name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / file_name
            target.write_text(redact(text))
            self.log_artifact(target)

    def log_dataset(self, uri: str, name: str, digest: str, context: str) -> None:
        """Record a dataset as an input of this run (MLflow's "Datasets used" panel), by
        reference: its location and digest, not its rows."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():
            # MLflow registers its local-file source twice, so every local path is "ambiguous"
            # between a class and itself, with a warning each time.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            source = resolve_dataset_source(redact(uri))
        dataset = MetaDataset(source, name=name, digest=digest[:36])
        tag = InputTag(key="mlflow.data.context", value=context)
        _client(self.tracking_uri).log_inputs(self.run_id, [DatasetInput(dataset._to_mlflow_entity(), [tag])])

    def log_table(self, frame: Any, file_name: str) -> None:
        """A pandas DataFrame as an MLflow table artifact (browsable in the UI's artifact view)."""
        _client(self.tracking_uri).log_table(self.run_id, frame, file_name)

    def log_figure(self, figure: Any, file_name: str) -> None:
        """Log a matplotlib figure as an image, then free it (pyplot keeps every open figure)."""
        import matplotlib.pyplot as plt

        _client(self.tracking_uri).log_figure(self.run_id, figure, file_name)
        plt.close(figure)

    def metrics(self) -> dict[str, float]:
        return dict(_client(self.tracking_uri).get_run(self.run_id).data.metrics)


def ensure_experiment(cfg: PipelineConfig) -> tuple[str, str]:
    """(tracking URI, experiment id), creating the experiment on first use.

    A local store gets an explicit artifact location under output_dir; MLflow would otherwise
    drop artifacts into ./mlruns of whatever directory the process happens to start in.
    """
    uri = tracking_uri(cfg)
    client = _client(uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:") or uri.startswith("file:"):
            location = (cfg.output_path / "mlartifacts").as_uri()
        try:
            client.create_experiment(cfg.tracking.experiment, artifact_location=location)
        except Exception:  # another process created it between our get and create
            pass
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        if experiment is None:
            raise LookupError(f"MLflow experiment {cfg.tracking.experiment!r} could not be created at {redact(uri)}")
    # Tagged on every use, not only at creation: an experiment made by an older raylane, or by
    # hand, gets the training view too. A description someone wrote is kept.
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    if "mlflow.note.content" not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, "mlflow.note.content", EXPERIMENT_DESCRIPTION)
    return uri, experiment.experiment_id


def _source_tags(source: str) -> dict[str, str]:
    """What the runs table's User and Source columns show: who ran it and which command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry
        user = "unknown"
    return {"mlflow.user": user, "mlflow.source.name": source, "mlflow.source.type": "JOB"}


@contextlib.contextmanager
def start_run(
    cfg: PipelineConfig,
    name: str,
    parent: RunRef | None = None,
    tags: dict[str, Any] | None = None,
    stage: str | None = None,
    source: str = "raylane",
) -> Iterator[RunRef]:
    """Open a run (nested under `parent` when given, inheriting its source), close it FINISHED or
    FAILED. `stage` (the `raylane.stage` tag that tests and tools select runs by) defaults to the
    name; `source` is the command, for the Source column."""
    uri, experiment_id = (parent.tracking_uri, parent.experiment_id) if parent else ensure_experiment(cfg)
    source = parent.source if parent else source
    all_tags = {**_source_tags(source), "raylane.stage": stage or name, **(tags or {})}
    if parent:
        all_tags["mlflow.parentRunId"] = parent.run_id
    client = _client(uri)
    # The name too: tracking.run_name may hold a ${VAR}.
    run = client.create_run(experiment_id, run_name=redact(name), tags={k: redact(str(v)) for k, v in all_tags.items()})
    ref = RunRef(uri, experiment_id, run.info.run_id, source)
    try:
        yield ref
    except SystemExit as stop:
        # How a stop request ends a block (Ray Tune's, for one): stopped, not failed.
        client.set_terminated(ref.run_id, "KILLED" if stop.code in (0, None) else "FAILED")
        raise
    except BaseException:
        client.set_terminated(ref.run_id, "FAILED")
        raise
    client.set_terminated(ref.run_id, "FINISHED")


@contextlib.contextmanager
def system_metrics(run: RunRef | None, interval_s: float, node: str | None = None, resume: bool = False):
    """While the block runs, sample this node's CPU, memory, disk and network (and GPUs, where
    nvidia-ml-py finds some) into `run`: MLflow's System metrics tab. `node` names the node when
    several log into one run; `resume` continues the step count of a restarted worker.
    A run of None or an interval of 0 samples nothing."""
    if run is None or interval_s <= 0:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run.run_id,
        sampling_interval=interval_s,
        samples_before_logging=1,
        resume_logging=resume,
        node_id=node,
        tracking_uri=run.tracking_uri,
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def close_open_children(parent: RunRef, status: str = "KILLED") -> int:
    """Mark child runs still RUNNING as ended: a trial stopped early by its scheduler is killed
    mid-run and never closes its own run. Returns how many were closed."""
    client = _client(parent.tracking_uri)
    open_runs = client.search_runs(
        [parent.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' and attributes.status = 'RUNNING'",
    )
    for run in open_runs:
        client.set_tag(run.info.run_id, "raylane.stopped_early", "true")
        client.set_terminated(run.info.run_id, status)
    return len(open_runs)


UI_WORKFLOW = "workflowType=machine_learning"


def ui_command(cfg: PipelineConfig, experiment_id: str | None = None) -> str:
    """How a person opens the MLflow UI on what this config tracks (on the experiment's runs
    table when its id is given)."""
    uri = tracking_uri(cfg)
    # MLflow 3.17's UI keeps one "workflow type" per browser, GenAI unless switched, and opens
    # every experiment in it (the experiment's kind tag only decides where that switch is off):
    # the link switches it to machine learning, which lands on the training runs table.
    page = f"/#/experiments/{experiment_id}/runs?{UI_WORKFLOW}" if experiment_id else ""
    if uri.startswith("sqlite:"):
        # The mlflow script next to this interpreter: works from a venv that is not activated.
        beside = Path(sys.executable).parent / "mlflow"
        mlflow_cli = str(beside) if beside.exists() else "mlflow"
        return f"{mlflow_cli} ui --backend-store-uri {uri} --port 5000   # then open http://127.0.0.1:5000{page}"
    return f"open {redact(uri).rstrip('/')}{page} in a browser"
