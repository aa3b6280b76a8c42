"""raylane as a user installs it: a wheel that adds one name to site-packages, runs its embedded
default from any directory, and lives beside a package named `evaluate`; and a plain checkout
that imports the same way with nothing installed (what `ray job submit --working-dir .` ships to
a cluster where raylane is not installed).

The fresh virtual environment sees the test environment's dependencies (ray, torch, ...) through
a .pth line, offline and in seconds; that does not run the test environment's own .pth files, so
its editable install of raylane stays invisible there."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
OFFLINE.pop("RAY_ADDRESS", None)
OFFLINE.pop("MLFLOW_TRACKING_URI", None)


def _run(args, cwd, timeout=300):
    out = subprocess.run(args, cwd=cwd, env=OFFLINE, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _wheel(source: Path, dist: Path) -> Path:
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
        cwd=dist.parent,
    )
    (wheel,) = dist.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtual environment without raylane, whose dependencies come from the test one."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        _run([str(venv / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"], cwd=venv).strip()
    )
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _install(venv: Path, wheel: Path) -> None:
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        cwd=venv,
    )


def test_a_checkout_imports_as_it_is_with_nothing_installed(fresh_venv, tmp_path):
    checkout = tmp_path / "uploaded"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (REPO_ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, checkout / name)
    python = str(fresh_venv / "bin" / "python")
    where = _run(
        [
            python,
            "-c",
            "import raylane.ingest.stage, raylane.serve.app, raylane.resources as r; "
            "print(raylane.ingest.stage.__file__); print(r.packaged('configs/default.yaml'))",
        ],
        cwd=checkout,
    ).split()
    assert where == [str(checkout / "ingest" / "stage.py"), str(checkout / "configs" / "default.yaml")]
    assert "config keys" in _run([python, "-m", "raylane", "--help"], cwd=checkout)


def test_the_wheel_holds_only_raylane_and_runs_its_default_from_an_empty_directory(fresh_venv, tmp_path):
    wheel = _wheel(REPO_ROOT, tmp_path / "dist")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"raylane", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    names = zipfile.ZipFile(wheel).namelist()
    assert "raylane/configs/default.yaml" in names and "raylane/data/made-with-ml/dataset.csv" in names
    assert not any(n.startswith(("raylane/tests", "raylane/bench")) for n in names)

    _install(fresh_venv, wheel)
    # A package called `evaluate` (Hugging Face's, usually) installed beside raylane: both import.
    stand_in = tmp_path / "evaluate-stand-in"
    (stand_in / "evaluate").mkdir(parents=True)
    (stand_in / "evaluate" / "__init__.py").write_text('WHO = "the other evaluate"\n')
    (stand_in / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "evaluate"\nversion = "0.0.1"\n'
    )
    _install(fresh_venv, _wheel(stand_in, tmp_path / "dist-evaluate"))

    empty = tmp_path / "empty"
    empty.mkdir()
    python, script = str(fresh_venv / "bin" / "python"), str(fresh_venv / "bin" / "raylane")
    both = _run(
        [python, "-c", "import evaluate, raylane.evaluate.stage as s; print(evaluate.WHO); print(s.__file__)"],
        cwd=empty,
    ).splitlines()
    assert both[0] == "the other evaluate" and both[1].startswith(str(fresh_venv))
    assert "config keys" in _run([script, "--help"], cwd=empty)
    log = _run([script, "ingest", "output_dir=out"], cwd=empty, timeout=600)
    assert "rows read       955" in log and "accepted        955" in log, log[-2000:]
    assert (empty / "out" / "dataset" / "manifest.json").is_file()  # output_dir is relative to where it ran
