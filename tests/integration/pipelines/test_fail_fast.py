"""What a cluster run depends on is checked before any compute: each case fails within seconds,
with a message naming what is wrong, and starts nothing (no Ray, no output)."""

import os
import shutil
import subprocess
import sys
import time

from raylane.http import free_port
from raylane.tasks.saved import SavedTask
from tests.paths import REPO_ROOT


def _run(tmp_path, *overrides: str, env_extra: dict[str, str] | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(env_extra or {})
    started = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raylane",
            "run",
            "--config",
            "configs/smoke.yaml",
            f"output_dir={tmp_path / 'out'}",
            *overrides,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.time() - started


def _assert_failed_fast(proc, seconds: float, *expected: str) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert seconds < 20, f"took {seconds:.1f}s"
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr


def test_unreachable_mlflow_server(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    proc, seconds = _run(tmp_path, f"tracking.uri={uri}")
    _assert_failed_fast(proc, seconds, f"MLflow tracking server {uri} is unreachable", "tracking.uri")


def test_unreachable_ray_address(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    proc, seconds = _run(tmp_path, env_extra={"RAY_ADDRESS": address})
    _assert_failed_fast(proc, seconds, f"Ray cluster at $RAY_ADDRESS={address} is unreachable")


def test_unwritable_storage_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc, seconds = _run(tmp_path, f"train.storage_path={blocker / 'checkpoints'}")
    _assert_failed_fast(proc, seconds, "config key 'train.storage_path': cannot write to", str(blocker))
    assert not (tmp_path / "out" / "dataset").exists()


def test_a_teacher_that_is_not_registered(tmp_path):
    proc, seconds = _run(tmp_path, "train.distill.teacher=models:/no-such-model@champion")
    _assert_failed_fast(proc, seconds, "train.distill.teacher", "no-such-model")


def test_a_teacher_of_another_task(tmp_path, tiny_model):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model, teacher)
    SavedTask("text_regression", []).write(teacher)
    proc, seconds = _run(tmp_path, f"model.name_or_path={tiny_model}", f"train.distill.teacher={teacher}")
    _assert_failed_fast(proc, seconds, "train.distill.teacher", "is a text_regression model")


def test_a_model_to_start_from_that_is_not_registered(tmp_path):
    proc, seconds = _run(tmp_path, "model.name_or_path=models:/no-such-chat@champion")
    _assert_failed_fast(proc, seconds, "model.name_or_path", "no-such-chat")
