"""`predict --output` replaces only what raylane predict wrote; anything else is kept and named."""

import subprocess
import sys

import pytest

from raylane.config import ConfigError
from raylane.serve.batch import MARKER, check_output_dir
from tests.paths import REPO_ROOT


def _with_a_file(directory):
    directory.mkdir()
    (directory / "thesis.tex").write_text("years of work")
    return directory


def _predictions_of_an_earlier_run(directory):
    _with_a_file(directory)
    (directory / MARKER).write_text("")
    return directory


@pytest.mark.parametrize(
    "make",
    [
        lambda d: d,  # absent
        lambda d: d.mkdir() or d,  # empty
        _predictions_of_an_earlier_run,
    ],
    ids=["absent", "empty", "marked"],
)
def test_predictions_may_go_where_nothing_else_would_be_lost(tmp_path, make):
    check_output_dir(make(tmp_path / "predictions"))


def test_a_directory_raylane_did_not_write_is_refused_by_name_unless_overwrite(tmp_path):
    directory = _with_a_file(tmp_path / "work")
    with pytest.raises(ConfigError, match=rf"--output {directory}: .*--overwrite") as refused:
        check_output_dir(directory)
    assert MARKER in str(refused.value)
    check_output_dir(directory, overwrite=True)
    assert (directory / "thesis.tex").read_text() == "years of work"  # checking deletes nothing


def test_a_file_is_never_an_output_directory(tmp_path):
    (tmp_path / "notes").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="not a directory"):
            check_output_dir(tmp_path / "notes", overwrite)


def test_the_cli_refuses_before_ray_starts_and_keeps_the_files(tmp_path):
    directory = _with_a_file(tmp_path / "work")
    proc = subprocess.run(
        [sys.executable, "-m", "raylane", "predict", "--input", "data/made-with-ml/holdout.csv", "--output", directory],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"--output {directory}" in proc.stderr and "--overwrite" in proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert (directory / "thesis.tex").read_text() == "years of work"
