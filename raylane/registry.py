"""The MLflow model registry: log an exported model as a pyfunc, register it, move aliases,
and fetch a registered model back as a local directory.

The model is logged as a small pyfunc around our `Predictor` (with the Hugging Face directory
as an artifact) rather than MLflow's transformers flavor, which cannot log a local checkpoint
with transformers 5.x. Any MLflow consumer can still `mlflow.pyfunc.load_model` it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylane.redact import redact
from raylane.tracking import RunRef, _client

MODEL_ARTIFACT = "model"
_CORE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ModelVersionRef:
    name: str
    version: str
    uri: str  # models:/<name>/<version>
    model_id: str = ""  # the MLflow 3 LoggedModel the version was registered from


def _pinned_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("torch", "transformers", "mlflow", "pandas", "numpy")]


def log_and_register(
    mlflow_run: RunRef,
    model_dir: str,
    registered_name: str,
    labels: list[str],
    tags: dict[str, Any] | None = None,
    description: str = "",
    params: dict[str, Any] | None = None,
) -> ModelVersionRef:
    """Log the model as a pyfunc under `run` (an MLflow 3 LoggedModel, with `params` and `tags`)
    and register it as a new version of `registered_name`, with its tags and description (the
    model card, shown in the registry UI)."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from raylane.tasks import get_task
    from raylane.tasks.saved import read_saved_task

    saved = read_saved_task(model_dir)
    task = get_task(saved.task)
    example = pd.DataFrame(task.inputs.example())
    output = pd.DataFrame(task.target.output_example(labels, saved.extras))
    mlflow.set_tracking_uri(mlflow_run.tracking_uri)
    with mlflow.start_run(run_id=mlflow_run.run_id, nested=True):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(_CORE_DIR / "pyfunc.py"),  # as code: nothing pickled
            artifacts={"hf_model": model_dir},
            code_paths=[str(_CORE_DIR)],
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=_pinned_requirements(),
            metadata={"task": saved.task, "labels": labels, "label2id": {name: i for i, name in enumerate(labels)}},
            registered_model_name=registered_name,
            params={k: redact(str(v)) for k, v in (params or {}).items()},
        )
    version = str(info.registered_model_version)
    client = _client(mlflow_run.tracking_uri)
    client.set_logged_model_tags(info.model_id, {k: redact(str(v)) for k, v in (tags or {}).items()})
    for key, value in (tags or {}).items():
        client.set_model_version_tag(registered_name, version, key, redact(str(value)))
    if description:
        client.update_model_version(registered_name, version, description=redact(description))
    return ModelVersionRef(registered_name, version, f"models:/{registered_name}/{version}", info.model_id)


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    _client(tracking_uri).set_registered_model_alias(name, alias, version)


def alias_version(tracking_uri: str, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the model or alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


@dataclass(frozen=True)
class ResolvedModel:
    model_dir: str  # local save_pretrained directory
    name: str | None = None
    version: str | None = None


def resolve_model(uri: str, tracking_uri: str, cache_dir: str = "") -> ResolvedModel:
    """A local export directory as is; a `models:/` or `runs:/` URI downloaded from MLflow. An
    alias is read once and that exact version downloaded (downloading by alias again could fetch
    a version the alias moved to in between, served under the old one's number). With `cache_dir`,
    a registered version goes to `<cache_dir>/<name>/<version>` and is downloaded once."""
    if not uri.startswith(("models:/", "runs:/")):
        path = Path(uri).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{uri}: not a model directory (no config.json) nor an MLflow model URI")
        return ResolvedModel(str(path.resolve()))
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    name = version = None
    if uri.startswith("models:/"):
        name, _, ref = uri[len("models:/") :].partition("@")
        if ref:  # models:/<name>@<alias>
            version = alias_version(tracking_uri, name, ref)
            if version is None:
                raise LookupError(f"{uri}: model '{name}' has no alias '{ref}' in {tracking_uri}")
        else:
            name, _, version = name.partition("/")
        uri = f"models:/{name}/{version}"
    if cache_dir and name and version:
        local = _cached_download(uri, version_dir(cache_dir, tracking_uri, name, version))
    else:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    found = sorted(local.glob("artifacts/*/config.json"))
    if not found:
        raise FileNotFoundError(f"{uri}: no Hugging Face model inside (expected artifacts/hf_model)")
    return ResolvedModel(str(found[0].parent), name, version)


_COMPLETE = ".raylane-complete"


def version_dir(cache_dir: str, tracking_uri: str, name: str, version: str) -> Path:
    """Where a registered version is cached: per registry (two servers' version 3 differ), name, version."""
    import hashlib

    registry = hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / registry / name.replace("/", "_") / str(version)


def _cached_download(uri: str, target: Path) -> Path:
    """`uri` downloaded into `target` once: into a scratch directory beside it first, renamed into
    place when whole, so a download cut short (or a replica beside this one downloading the same
    version) never leaves a half model where a whole one is expected."""
    import shutil
    import tempfile

    import mlflow

    if (target / _COMPLETE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch))
        (scratch / _COMPLETE).touch()
        if target.exists():  # an incomplete one left by a crash
            shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    except OSError:
        if not (target / _COMPLETE).is_file():  # not another replica's download that landed first
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def prune_cache(cache_dir: str, tracking_uri: str, name: str, keep: set[str]) -> list[str]:
    """Deletes the cached versions of `name` other than `keep`; the versions deleted."""
    import shutil

    versions = version_dir(cache_dir, tracking_uri, name, "0").parent
    pruned = []
    for entry in sorted(versions.iterdir()) if versions.is_dir() else []:
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
            pruned.append(entry.name)
    return pruned


# A model named in MLflow's registry or a run, rather than a hub id or a directory.
MODEL_URIS = ("models:/", "runs:/")


def fetch_configured(uri: str, key: str, cfg, cache: str) -> ResolvedModel:
    """The model a config key names (a directory, `models:/<name>@<alias>`,
    `models:/<name>/<version>`, `runs:/...`), an alias read once and that version fetched once
    into `<output_dir>/<cache>`, where every later step of the run reads it. A ConfigError naming
    `key` when there is no such model."""
    from raylane.errors import ConfigError
    from raylane.tracking import tracking_uri

    try:
        return resolve_model(uri, tracking_uri(cfg), cache_dir=str(cfg.output_path / cache))
    except Exception as err:  # no such directory, model, version, alias or run: the user's to fix
        raise ConfigError(key, f"cannot load {uri!r}: {err}") from None


def pin_base_model(cfg):
    """The config with `model.name_or_path` a registered model's files when it names one: a run
    that starts from an earlier run's model, as preference tuning starts from the
    instruction-tuned champion (`fetch_configured`: into `<output_dir>/base_models`, where
    ingest's tokenizer, the workers and the reference model read it)."""
    import dataclasses

    uri = cfg.model.name_or_path
    resolved = fetch_configured(uri, "model.name_or_path", cfg, "base_models")
    pinned = f"models:/{resolved.name}/{resolved.version}" if resolved.name else uri
    print(f"model: {uri} is {pinned} ({resolved.model_dir})")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=resolved.model_dir))
