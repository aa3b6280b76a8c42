"""cluster.yaml passes Ray's own cluster-config validation, declares its GPUs, and installs the
exact pins of pyproject.toml; the job configs load."""

import re

import pytest
import tomllib
import yaml

from raylane.config import load_config
from tests.paths import REPO_ROOT


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())


def test_ray_validates_the_cluster_config(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cluster))  # raises on unknown keys, wrong types, bad head type


def test_gpu_node_types_declare_their_gpus(cluster):
    types = cluster["available_node_types"]
    gpu_types = [name for name, t in types.items() if t["node_config"]["InstanceType"].startswith(("g", "p"))]
    assert gpu_types
    for name in gpu_types:
        assert types[name]["resources"]["GPU"] >= 1, name
    assert types[cluster["head_node_type"]]["resources"].get("GPU", 0) == 0  # no training on the head


def _pins() -> dict[str, str]:
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", dep)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_install_commands_use_the_project_pins(cluster):
    commands = " ".join(cluster["setup_commands"])
    pinned_here = dict(re.findall(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([0-9][^\s\"']*)", commands))
    pins = _pins()
    assert pinned_here, "cluster.yaml pins nothing"
    for package, version in pinned_here.items():
        assert pins.get(package.lower()) == version, (
            f"{package}=={version} but pyproject.toml pins {pins.get(package.lower())}"
        )
    assert "torch" in pinned_here  # before the project, or pip could pick another torch build
    assert "pip install -q -e ~/raylane" in commands  # the project and every other pin it carries
    assert cluster["file_mounts"]["~/raylane"] == "."


def test_cluster_pipeline_config_loads_with_storage_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAYLANE_STORAGE", "s3://bucket/raylane")
    cfg = load_config(REPO_ROOT / "configs" / "cluster.yaml")
    assert cfg.train.storage_path == "s3://bucket/raylane/checkpoints"
    assert cfg.data.output_uri.startswith("s3://bucket/raylane/")
    assert cfg.resources.use_gpu and cfg.tracking.uri == ""  # the server comes from $MLFLOW_TRACKING_URI


def test_job_runtime_env_leaves_heavy_and_private_things_behind():
    env = yaml.safe_load((REPO_ROOT / "configs" / "job_runtime_env.yaml").read_text())
    assert {"/.git", "/.venv", "/outputs"} <= set(env["excludes"])
    assert "/data" not in env["excludes"]  # the embedded datasets are package data: the job needs them


def test_job_runtime_env_keeps_a_cluster_console_as_quiet_as_a_local_one():
    from raylane.console import QUIET_ENV, RAY_DATA_LOGGING

    env = yaml.safe_load((REPO_ROOT / "configs" / "job_runtime_env.yaml").read_text())["env_vars"]
    assert QUIET_ENV.items() <= env.items()
    # A job's workers start in the uploaded working directory: the path is relative to it.
    assert env["RAY_DATA_LOGGING_CONFIG"] == f"configs/{RAY_DATA_LOGGING}"
    assert (REPO_ROOT / env["RAY_DATA_LOGGING_CONFIG"]).is_file()


def test_serve_config_is_valid_for_serve_deploy():
    from ray.serve.schema import ServeDeploySchema

    from raylane.serve.app import ServeArgs, build_app

    raw = yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    (app,) = schema.applications
    module, _, attr = app.import_path.partition(":")
    assert (module, attr) == ("raylane.serve.app", "build_app")
    args = ServeArgs(**app.args)  # the builder's typed arguments accept what the file gives
    assert args.model_uri.endswith("@champion")
    assert build_app(args) is not None
