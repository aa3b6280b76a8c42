"""Screenshot raylane's results in the MLflow UI, the way a person would look at them.

    .venv/bin/python tools/ui_screenshots.py --tracking-uri sqlite:///outputs/mlflow.db --out docs/screenshots \
        [--experiment raylane] [--port 5055]

Starts `mlflow server` on 127.0.0.1 over the tracking store, drives headless Chromium with Playwright and writes:

  runs_table.png      the experiment's runs table, nested stage/trial runs expanded
  training_charts.png a training run's "Model metrics" charts (per-epoch loss / F1)
  evaluate_artifacts.png  the evaluate run's artifacts with confusion_matrix.png open
  registered_model.png    the model registry entry with its versions and aliases

Needs (not part of raylane's dependencies):
  - Debian's Chromium: `apt-get install -y chromium chromium-driver` (used as /usr/bin/chromium);
  - Playwright's Python package: `.venv/bin/pip install playwright`. Do NOT run `playwright install`: the
    system Chromium is launched through `executable_path`, no browser is downloaded.

Exits non-zero with a message naming the page when a page does not render.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from raylane.tracking import UI_WORKFLOW

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError:
    sys.exit("needs Playwright's Python package: .venv/bin/pip install playwright (but never `playwright install`)")

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialing Google services, which a closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
RENDER_TIMEOUT_MS = 60_000
TRAIN_METRIC = "val_macro_f1"


class PageDidNotRender(RuntimeError):
    pass


@dataclass
class Targets:
    experiment_id: str
    parent_run_id: str
    train_run_id: str
    train_run_name: str
    evaluate_run_id: str
    model_name: str
    model_version: str


def find_targets(tracking_uri: str, experiment: str) -> Targets:
    """The runs and model to show, from the newest pipeline run in the experiment."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"no experiment named {experiment!r} in {tracking_uri}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not parents:
        sys.exit(f"experiment {experiment!r} has no runs")
    parent = parents[0]

    # Everything under the newest parent (stages, and trials under the sweep).
    family, frontier = [], [parent.info.run_id]
    while frontier:
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in frontier]
        family += kids
        frontier = [r.info.run_id for r in kids]

    # A run with per-epoch metrics: the best trial of a sweep, else the train stage.
    trained = [r for r in family if TRAIN_METRIC in r.data.metrics]
    if not trained:
        sys.exit(f"no run under {parent.info.run_name!r} logged {TRAIN_METRIC}")
    train = max(trained, key=lambda r: r.data.metrics[TRAIN_METRIC])

    evaluate = next((r for r in family if r.data.tags.get("raylane.stage") == "evaluate"), None)
    if evaluate is None:
        sys.exit(f"no evaluate run under {parent.info.run_name!r}")

    # The model version this pipeline run registered, else the newest one from any run of the experiment.
    family_ids, run_ids = {r.info.run_id for r in family}, {r.info.run_id for r in runs}
    versions = [v for v in client.search_model_versions(max_results=1000) if v.run_id in run_ids]
    if not versions:
        sys.exit(f"no registered model version comes from experiment {experiment!r}")
    version = max(versions, key=lambda v: (v.run_id in family_ids, v.creation_timestamp))
    return Targets(
        experiment_id=exp.experiment_id,
        parent_run_id=parent.info.run_id,
        train_run_id=train.info.run_id,
        train_run_name=train.info.run_name,
        evaluate_run_id=evaluate.info.run_id,
        model_name=version.name,
        model_version=version.version,
    )


def free_port(preferred: int | None) -> int:
    """The preferred port if it is free, else one the OS hands out."""
    with socket.socket() as sock:
        # Like the server will: a port whose last connections linger in TIME_WAIT is still free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred or 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(tracking_uri: str, port: int) -> Iterator[str]:
    """`mlflow server` over the store; stopped (its whole process group) however the block exits."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # The job runner would start Huey workers we do not need; it also slows start-up.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = tempfile.NamedTemporaryFile("w+", prefix="mlflow-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, ok = f"http://127.0.0.1:{port}", False
    try:
        wait_until_up(url, proc, log.name)
        yield url
        ok = True
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        if ok:  # keep the server's log only when something went wrong
            os.unlink(log.name)


def wait_until_up(url: str, proc: subprocess.Popen, log_path: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"mlflow server exited with {proc.returncode}; see {log_path}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.5)
    raise PageDidNotRender(f"mlflow server did not answer on {url} within {timeout_s:.0f}s; see {log_path}")


def take_screenshots(url: str, t: Targets, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    # A persistent context over a throwaway directory is how Playwright takes a fresh --user-data-dir.
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, viewport=VIEWPORT
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(RENDER_TIMEOUT_MS)
            base = f"{url}/#/experiments/{t.experiment_id}"
            return [
                shoot_runs_table(page, base, t, out / "runs_table.png"),
                shoot_training_charts(page, base, t, out / "training_charts.png"),
                shoot_evaluate_artifacts(page, base, t, out / "evaluate_artifacts.png"),
                shoot_registered_model(page, url, t, out / "registered_model.png"),
            ]
        finally:
            browser.close()


def wait_for(page, selector: str, what: str) -> None:
    """Wait for the element that proves the page's data arrived, or fail naming the page."""
    try:
        page.locator(selector).first.wait_for(state="visible")
    except Exception as exc:  # playwright's TimeoutError, and errors if the page crashed
        raise PageDidNotRender(f"{what}: {selector!r} never showed at {page.url}") from exc


def settle(page) -> None:
    """Let spinners finish and charts draw (they animate in) before the shot, with no hover or focus styling."""
    with contextlib.suppress(Exception):
        page.wait_for_load_state("networkidle", timeout=15_000)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.move(0, VIEWPORT["height"] - 1)  # off the charts: hovering one shows Plotly's toolbar
    page.wait_for_timeout(1500)


def close_assistant(page) -> None:
    """The MLflow Assistant side panel opens on every fresh profile and covers a third of the page."""
    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    with contextlib.suppress(Exception):
        close.click(timeout=5_000)


def dismiss_overlays(page) -> None:
    """The GenAI overview greets a fresh profile with a "Detect Issues" tip that blocks clicks, and the Assistant."""
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Got it").click(timeout=5_000)
    close_assistant(page)


def shoot_runs_table(page, base: str, t: Targets, path: Path) -> Path:
    # The link `raylane run` prints (raylane.tracking.ui_command): MLflow 3.17 keeps a per-browser "workflow type",
    # GenAI on a fresh profile, and the link's workflowType=machine_learning switches it to the training view. Where
    # it lands is printed: the evidence that a person following the link sees the runs table, not GenAI traces.
    page.goto(f"{base}/runs?{UI_WORKFLOW}")
    parent_row = f'a[href$="/runs/{t.parent_run_id}"]'
    with contextlib.suppress(Exception):
        page.locator(parent_row).first.wait_for(state="visible", timeout=20_000)
    landed = page.url.removeprefix(base) or "/"
    print(f"experiment {t.experiment_id} first opened on {landed}", file=sys.stderr)
    dismiss_overlays(page)
    if page.locator(parent_row).count() == 0:
        page.locator('div[role="button"]:has-text("Model training")').click()
    wait_for(page, parent_row, "runs table")
    # Parent rows carry a "+" expander; expanding a stage (the sweep) reveals new ones for its trials.
    collapsed = page.locator('button[data-component-id$="runnamecellrenderer.tsx_46"]:has(path[d^="M7.25 7.25V4.5"])')
    for _ in range(50):
        if collapsed.count() == 0:
            break
        collapsed.first.click()
        page.wait_for_timeout(300)
    settle(page)
    page.screenshot(path=path)
    return path


def shoot_training_charts(page, base: str, t: Targets, path: Path) -> Path:
    page.goto(f"{base}/runs/{t.train_run_id}/model-metrics?{UI_WORKFLOW}")
    wait_for(page, ".js-plotly-plot", f"model metrics of run {t.train_run_name!r}")
    close_assistant(page)
    # Fifteen charts in name order would put val_macro_f1 below the fold; the search box takes a regex.
    search = page.get_by_placeholder("Search metric charts")
    search.fill("loss|macro_f1")
    search.blur()
    settle(page)
    page.screenshot(path=path)
    return path


def shoot_evaluate_artifacts(page, base: str, t: Targets, path: Path) -> Path:
    page.goto(f"{base}/runs/{t.evaluate_run_id}/artifacts/confusion_matrix.png?{UI_WORKFLOW}")
    wait_for(page, 'img[alt="confusion_matrix.png"]', "evaluate run's confusion matrix")
    page.wait_for_function("[...document.images].some(i => i.alt === 'confusion_matrix.png' && i.naturalWidth > 0)")
    close_assistant(page)
    settle(page)
    page.screenshot(path=path)
    return path


def shoot_registered_model(page, url: str, t: Targets, path: Path) -> Path:
    page.goto(f"{url}/#/models/{t.model_name}?{UI_WORKFLOW}")
    wait_for(page, f'a:has-text("Version {t.model_version}")', f"registered model {t.model_name!r}")
    close_assistant(page)
    settle(page)
    page.screenshot(path=path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///outputs/mlflow.db")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNGs")
    parser.add_argument("--experiment", default="raylane")
    parser.add_argument("--port", type=int, default=5055, help="used if free, else any free port")
    args = parser.parse_args(argv)

    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    targets = find_targets(args.tracking_uri, args.experiment)
    try:
        with mlflow_server(args.tracking_uri, free_port(args.port)) as url:
            paths = take_screenshots(url, targets, args.out)
    except (PageDidNotRender, PlaywrightError) as exc:  # PlaywrightError: a click or wait that timed out
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
