"""`raylane loop`: the lifecycle closed. It watches the served champion and, when a trigger fires
(`raylane.pipelines.triggers`), runs a cycle: ingest (the source plus the feedback sink) ->
sweep or train (from the champion's weights with loop.warm_start) -> evaluate -> gate and
register, as one MLflow run with the trigger as its reason. What follows is the serving app's:
with serve.rollout: canary the new version walks the canary to champion, else it is swapped in.

Guards, so that a loop left alone cannot churn: one loop per output directory (a lock the OS
drops when its process dies, however it dies), a cool-down after each cycle, a budget of cycles
per 24 hours, no cycle while a rollout is still walking, and a cycle that fails moves no alias:
the champion keeps serving. Its record, `<output_dir>/loop/state.json`, outlives the process: a
loop killed mid-cycle finds its cycle there when restarted, marks it (and its MLflow run)
interrupted, and counts it against the budget.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig
from raylane.pipelines.triggers import feedback_rows, look
from raylane.redact import redact
from raylane.serve.deploy import feedback_location

DAY_S = 86400
KEPT_CYCLES = 200  # the record keeps the latest cycles; MLflow keeps every one


class LoopState:
    """The loop's record and its lock, in one directory."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "state.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.setdefault("cycles", [])
        self._lock = None

    def lock(self) -> bool:
        """Hold the directory for this process's life; False if another process holds it."""
        handle = open(self.dir / "lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle
        return True

    def holder(self) -> str:
        try:
            return (self.dir / "lock").read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def save(self) -> None:
        self.data["cycles"] = self.data["cycles"][-KEPT_CYCLES:]
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=2))
        temporary.replace(self.path)  # a reader (or a restart) never sees half a record

    def recover(self, cfg: PipelineConfig) -> dict | None:
        """A cycle the record says is running, while this process holds the lock, was killed with
        its loop: recorded as interrupted, its MLflow run marked KILLED."""
        running = self.data.pop("running", None)
        if not running:
            return None
        cycle = {**running, "ended_at": time.time(), "outcome": "interrupted"}
        cycle["detail"] = f"the loop (pid {running.get('pid')}) stopped mid-cycle"
        if running.get("run_id"):
            from mlflow import MlflowClient

            from raylane.tracking import tracking_uri

            MlflowClient(tracking_uri(cfg)).set_terminated(running["run_id"], "KILLED")
        self.data["cycles"].append(cycle)
        self.save()
        return cycle


def why_wait(cfg: PipelineConfig, state: dict[str, Any], now: float) -> str:
    """Why a due cycle may not start now ("" when it may)."""
    last = state.get("last_cycle_at")
    if last and now - last < cfg.loop.cooldown_s:
        return f"cooling down until {_clock(last + cfg.loop.cooldown_s)} (loop.cooldown_s {cfg.loop.cooldown_s:g})"
    recent = sorted(c["started_at"] for c in state["cycles"] if now - c["started_at"] < DAY_S)
    if len(recent) >= cfg.loop.max_cycles_per_day:
        return (
            f"{len(recent)} cycles in the last 24 h, the budget (loop.max_cycles_per_day); "
            f"the next may start at {_clock(recent[-cfg.loop.max_cycles_per_day] + DAY_S)}"
        )
    walking = rollout_in_progress(cfg)
    if walking:
        return walking
    return ""


def rollout_in_progress(cfg: PipelineConfig) -> str:
    """A canary rollout still walking: the next cycle waits for its verdict."""
    from raylane import rollout
    from raylane.tracking import tracking_uri

    try:
        pointed, record = rollout.registry_state(tracking_uri(cfg), cfg.model.registered_name)
    except Exception:  # no registered model yet: nothing walks
        return ""
    challenger = pointed.get(rollout.CHALLENGER)
    if challenger and record is not None and record.walks(challenger):
        return f"version {challenger} is still walking the canary"
    return ""


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def cycle_config(cfg: PipelineConfig) -> PipelineConfig:
    """The config a cycle trains with: the feedback sink read beside the source (text tasks),
    and with warm_start the champion's weights as the starting point."""
    from raylane.tasks import get_task

    data, model = cfg.data, cfg.model
    if cfg.loop.feedback and "data.feedback_source" in get_task(cfg.task).config_keys:
        data = dataclasses.replace(data, feedback_source=feedback_location(cfg))
    if cfg.loop.warm_start:
        champion = champion_dir(cfg)
        if champion:
            model = dataclasses.replace(model, name_or_path=champion)
    return dataclasses.replace(cfg, data=data, model=model)


def champion_dir(cfg: PipelineConfig) -> str:
    """The champion's model directory, fetched from the registry; "" when there is none yet."""
    from raylane.registry import resolve_model
    from raylane.tracking import tracking_uri

    try:
        return resolve_model(cfg.serve_model_uri, tracking_uri(cfg)).model_dir
    except Exception as err:  # no champion yet: a cold start is all there is
        print(f"loop: warm start has no champion to start from ({type(err).__name__}); training from the base model")
        return ""


def check_room(cfg: PipelineConfig) -> None:
    """On one machine, training must fit beside the serving app, or it waits for CPUs forever
    (the default config's replica takes both of a laptop's cores). A cluster of several nodes
    may autoscale, so there it is only said."""
    import ray

    need = max(1, cfg.resources.num_workers) * cfg.resources.cpus_per_worker
    free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
    if free >= need:
        return
    message = (
        f"training needs {need:g} CPUs (resources.num_workers x cpus_per_worker) and {free:g} of the cluster's "
        f"{total:g} are free (the serving app holds serve.num_replicas x serve.replica_cpus)"
    )
    if len([n for n in ray.nodes() if n.get("Alive")]) == 1:
        raise RuntimeError(f"{message}: lower one of them, or add a node")
    print(f"loop: {message}; waiting for the cluster to make room")


def run_cycle(cfg: PipelineConfig, state: LoopState, reasons: list[str]) -> dict:
    """One cycle, recorded in `state` and as an MLflow run; never raises for a failed cycle."""
    from raylane.ingest.inputs import source_tasks
    from raylane.pipelines.commands import pipeline_run, train_to_registry
    from raylane.runtime import init_ray

    reason = "; ".join(reasons)
    cycle: dict[str, Any] = {"started_at": time.time(), "reason": reason, "pid": os.getpid()}
    state.data["running"] = dict(cycle)
    state.save()
    print(f"\nloop: cycle starts: {reason}")
    rows = feedback_rows(feedback_location(cfg)) if cfg.loop.feedback else 0  # before ingest reads the sink
    try:
        cycle_cfg = cycle_config(cfg)
        cycle["warm_start_from"] = cycle_cfg.model.name_or_path if cfg.loop.warm_start else ""
        tasks = source_tasks(cycle_cfg)
        init_ray()
        check_room(cycle_cfg)
        with pipeline_run(cycle_cfg, "loop") as parent:
            cycle["run_id"] = state.data["running"]["run_id"] = parent.run_id
            state.save()
            parent.set_tags({"raylane.loop.reason": reason[:5000], "raylane.loop.warm_start": str(cfg.loop.warm_start)})
            _, _, evaluation, promotion = train_to_registry(cycle_cfg, parent, tasks)
            cycle.update(
                outcome=promotion.alias,
                version=promotion.version.version,
                failed_rules=promotion.decision.reasons,
                metrics=evaluation.metrics,
            )
            parent.set_tags({"raylane.loop.outcome": promotion.alias})
        state.data["feedback_rows"] = rows  # what this cycle trained on is no longer new
    except Exception as err:  # the champion keeps serving: only the gate moves aliases
        traceback.print_exc()
        cycle.update(outcome="failed", detail=redact(f"{type(err).__name__}: {err}")[:2000])
    finally:
        cycle.setdefault("outcome", "interrupted")
        cycle["ended_at"] = time.time()
        state.data["cycles"].append(cycle)
        state.data["last_cycle_at"] = cycle["ended_at"]
        state.data.pop("drift_since", None)  # the next champion is judged on its own answers
        state.data.pop("running", None)
        state.save()
    print(f"loop: cycle ended in {cycle['ended_at'] - cycle['started_at']:.0f} s: {describe(cycle)}")
    return cycle


def describe(cycle: dict) -> str:
    outcome = cycle["outcome"]
    if outcome == "failed":
        return f"failed ({cycle['detail']}); the champion keeps serving"
    if outcome == "rejected":
        rules = "; ".join(cycle["failed_rules"])
        return f"version {cycle['version']} rejected by the gate ({rules}); the champion keeps serving"
    if outcome == "challenger":
        return f"version {cycle['version']} passed the gate and walks the canary (raylane rollout status)"
    return f"version {cycle['version']} passed the gate: {outcome}"


def run_loop(cfg: PipelineConfig, once: bool = False) -> int:
    """Look, maybe cycle, wait loop.poll_s (or a webhook's wake-up), again; `once`: one look."""
    state = LoopState(cfg.output_path / "loop")
    if not state.lock():
        print(f"loop: another raylane loop (pid {state.holder()}) runs on {state.dir}; this one does nothing")
        return 0 if once else 2
    interrupted = state.recover(cfg)
    if interrupted:
        print(f"loop: the cycle started at {_clock(interrupted['started_at'])} was interrupted; recorded")
    state.data.setdefault("started_at", time.time())
    wake, webhook = threading.Event(), None
    if cfg.loop.triggers.webhook:
        from raylane.pipelines.webhook import Webhook

        secret = os.environ.get(cfg.loop.webhook_secret_env, "").encode()
        if not secret:
            print(
                f"raylane: error: loop.webhook_secret_env names ${cfg.loop.webhook_secret_env}, which is unset or empty"
            )
            return 2
        webhook = Webhook(cfg.loop.webhook_host, cfg.loop.webhook_port, secret, wake)
        print(f"loop: taking alerts at POST {webhook.url}")
    said, code = "", 0
    try:
        while True:
            now = time.time()
            seen = look(cfg, state.data, webhook.take() if webhook else [], now)
            state.save()
            if not seen.reasons:
                line = f"loop: nothing to do ({'; '.join(seen.seen) or 'no trigger configured'})"
            else:
                wait = why_wait(cfg, state.data, now)
                line = f"loop: due ({'; '.join(seen.reasons)}), but {wait}" if wait else ""
                if not wait:
                    code = 1 if run_cycle(cfg, state, seen.reasons)["outcome"] == "failed" else 0
            if line and line != said:  # a long-running loop says what changed, not every look
                print(line, flush=True)
                said = line
            if once:
                return code
            wake.wait(cfg.loop.poll_s)
            wake.clear()
    finally:
        if webhook:
            webhook.close()
