"""Canary rollouts on Serve (serve.rollout: canary). Two parts:

- `RolloutController`, one small deployment beside the model's: it watches the registry for a
  `challenger`, gathers what every replica saw per version, judges each step by the rules of
  serve.canary (`raylane.rollout.judge`), advances, promotes or rolls back, and logs the rollout
  as an MLflow run with its timeline.
- `CanaryLane`, in each model replica: it reports its evidence to the controller every tick and
  takes back the plan (which challenger, what share), loads the challenger beside the champion,
  and routes each request to one of the two. Routing is a draw in the replica (no extra hop):
  requests in flight keep the model they started with whatever the plan does next.

The rollout's state is in the registry (`raylane.rollout`), so a restarted controller resumes
where the record says, and `raylane rollout ...` can end a rollout by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ray import serve

from raylane.hashing import stable_fraction
from raylane.rollout import (
    CHALLENGER,
    CHAMPION,
    RUNNING,
    Evidence,
    Rollout,
    dealt_to_challenger,
    judge,
    promote,
    registry_state,
    roll_back,
    write_rollout,
)
from raylane.serve.swap import Loaded, LoadFailed, alias_of

if TYPE_CHECKING:
    from raylane.drift import DriftWindow

logger = logging.getLogger("ray.serve")


class RolloutControl:
    """The controller's logic, without Serve: `tick` judges and moves the rollout; `report` takes
    a replica's evidence and answers the plan."""

    def __init__(self, tracking_uri: str, name: str, settings, alias: str = CHAMPION):
        self.tracking_uri, self.name, self.settings, self.alias = tracking_uri, name, settings, alias
        self.lock = threading.Lock()
        pointed, self.rollout = registry_state(tracking_uri, name)
        self.champion: str | None = pointed.get(alias)
        self.evidence: dict[str, Evidence] = {}
        self.baseline_p95_s = 0.0
        self.later: list[Callable[[], None]] = []  # MLflow logging, done once the lock is released

    def plan(self) -> dict:
        rollout = self.rollout
        running = rollout is not None and rollout.state == RUNNING
        return {
            "champion": self.champion,
            "challenger": rollout.version if running else None,
            "share": rollout.share(self.settings.steps) if running else 0.0,
            "step_key": rollout.step_key if running else "",
            "sticky": self.settings.sticky,
        }

    def report(self, by_step: dict[str, dict[str, dict]]) -> dict:
        """`by_step`: step key -> version -> what a replica saw of the requests it routed under
        that step; only the current step's count (a request routed under the last one does not)."""
        with self.lock:
            current = self.rollout.step_key if self.rollout is not None else None
            for version, seen in by_step.get(current, {}).items() if current else ():
                self.evidence.setdefault(version, Evidence()).add(seen)
            return self.plan()

    def tick(self) -> None:
        with self.lock:
            self._tick()
        # The MLflow logging (a plot at the end) after the lock: replicas' reports, which take the
        # new plan, do not wait for it.
        later, self.later = self.later, []
        for log in later:
            try:
                log()
            except Exception:  # the rollout's outcome is recorded in the registry already
                logger.exception("logging the rollout to MLflow failed")

    def _tick(self) -> None:
        before = self.rollout
        pointed, rollout = registry_state(self.tracking_uri, self.name)
        self.champion, self.rollout = pointed.get(self.alias), rollout
        if _ended_by_hand(before, rollout):  # `raylane rollout promote | abort`
            self.evidence = {}
            self._close_run(rollout)
        challenger = pointed.get(CHALLENGER)
        if rollout is not None and rollout.state == RUNNING and challenger != rollout.version:
            # The alias moved by hand (or to another version): this rollout is over.
            self.rollout = roll_back(self.tracking_uri, self.name, rollout, "challenger alias moved", "aborted")
            self._close_run(self.rollout)
            rollout = self.rollout
        if challenger and challenger != self.champion and (rollout is None or rollout.version != challenger):
            self._start(challenger)
        elif rollout is not None and rollout.state == RUNNING:
            self._judge(rollout)

    def _start(self, challenger: str) -> None:
        rollout = Rollout(version=challenger, champion=self.champion or "")
        rollout.run_id = _start_run(self.tracking_uri, self.name, rollout, self.settings)
        write_rollout(self.tracking_uri, self.name, rollout)
        self.rollout, self.evidence = rollout, {}
        logger.warning(
            "rollout of %s version %s started: %s%% of requests (champion: version %s)",
            self.name,
            challenger,
            rollout.share(self.settings.steps),
            self.champion,
        )

    def _judge(self, rollout: Rollout) -> None:
        challenger = self.evidence.get(rollout.version, Evidence())
        champion = self.evidence.get(rollout.champion, Evidence())
        if champion.requests >= self.settings.min_requests:
            self.baseline_p95_s = champion.p95_s()
        verdict = judge(challenger, champion, self.baseline_p95_s, self.settings, time.time() - rollout.step_started)
        if verdict.action == "wait":
            return
        share = rollout.share(self.settings.steps)
        entry = {
            "step": rollout.step,
            "share": share,
            "ended": time.time(),
            "verdict": verdict.action,
            "challenger": challenger.summary(),
            "champion": champion.summary(),
        }
        rollout.history.append(entry)
        self.later.append(lambda: _log_step(self.tracking_uri, rollout, dict(entry)))
        if verdict.action == "rollback":
            self.rollout = roll_back(self.tracking_uri, self.name, rollout, verdict.reason)
            logger.warning("rollout of %s version %s rolled back: %s", self.name, rollout.version, verdict.reason)
        elif rollout.step + 1 >= len(self.settings.steps):
            reason = f"every rule held at each of the steps {list(self.settings.steps)}"
            self.rollout = promote(self.tracking_uri, self.name, rollout, reason, self.alias)
            self.champion = rollout.version
            logger.warning("rollout of %s version %s promoted to champion", self.name, rollout.version)
        else:
            rollout.step += 1
            rollout.step_started = time.time()
            write_rollout(self.tracking_uri, self.name, rollout)
            logger.warning(
                "rollout of %s version %s: step %d, %s%% of requests",
                self.name,
                rollout.version,
                rollout.step,
                rollout.share(self.settings.steps),
            )
        self.evidence = {}
        if self.rollout.state != RUNNING:
            self._close_run(self.rollout)

    def _close_run(self, rollout: Rollout) -> None:
        self.later.append(lambda: _end_run(self.tracking_uri, rollout, self.settings))


def _ended_by_hand(before: Rollout | None, now: Rollout | None) -> bool:
    return (
        before is not None
        and before.state == RUNNING
        and now is not None
        and now.version == before.version
        and now.state != RUNNING
    )


@serve.deployment(
    name="RolloutController",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False, "log_level": "WARNING"},  # its log: rollout steps, not reports
)
class RolloutController:
    """The one controller of an app's rollouts."""

    def __init__(self, args):
        import os

        name, alias = alias_of(args.model_uri)
        tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        self.control = RolloutControl(tracking_uri, name, args.canary, alias)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-controller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.control.settings.tick_s):
            try:
                self.control.tick()
            except Exception:  # a registry hiccup: the next tick tries again
                logger.exception("rollout controller tick failed")

    def report(self, by_step: dict) -> dict:
        return self.control.report(by_step)

    def __del__(self):
        self._stop.set()


def canary_on(args) -> bool:
    """A rollout needs a model that follows an alias, the thing the rollout moves."""
    return args.rollout == "canary" and alias_of(args.model_uri) is not None and args.poll_interval_s > 0


def bind_app(deployment, args):
    """The app: the model's deployment, with a rollout controller beside it under canary."""
    if canary_on(args):
        return deployment.bind(args, RolloutController.bind(args))
    return deployment.bind(args)


class CanaryLane:
    """A replica's side of the rollout: the challenger it loaded, the share it routes to it, and
    the evidence it gathers per version until its next report."""

    def __init__(
        self,
        controller,
        load: Callable[[str], Loaded],
        adopt: Callable[[Loaded], None],
        name: str,
        tick_s: float,
        metrics=None,
    ):
        self.controller, self.load, self.adopt, self.name, self.tick_s = controller, load, adopt, name, tick_s
        self.metrics = metrics
        self.challenger: Loaded | None = None
        self.refused: str | None = None
        self.share, self.sticky, self.step_key = 0.0, False, ""
        self.dealt = 0  # requests dealt under this step's share
        self.seen: dict[str, dict] = {}
        self.drifts: dict[str, DriftWindow | None] = {}  # per version seen since the last report
        self.seen_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary-lane", daemon=True)
        self._thread.start()

    def pick(self, champion: Loaded, client: str | None) -> tuple[Loaded, str]:
        """The version this request goes to: the challenger for `share` percent of requests, the
        champion for the rest. Sticky, a client's key (or request id) decides, the same way for
        the whole step; otherwise the requests are dealt in turn (the n-th goes to the challenger
        when n x share crosses a whole percent), so a step's share is exact, not a dice's."""
        challenger, share, step = self.challenger, self.share, self.step_key
        if challenger is None or share <= 0:
            return champion, step
        if self.sticky and client:
            return (challenger if stable_fraction(f"{step}|{client}") * 100 < share else champion), step
        self.dealt += 1
        return (challenger if dealt_to_challenger(self.dealt, share) else champion), step

    def record(self, loaded: Loaded, step: str, ok: bool, seconds: float) -> None:
        """A request's outcome, under the step it was routed in (`pick`'s)."""
        version = str(loaded.version)
        with self.seen_lock:
            seen = self._seen(step, version)
            seen["requests"] += 1
            seen["errors"] += 0 if ok else 1
            if ok:
                seen["latencies_s"].append(seconds)
            self.drifts[version] = loaded.drift

    def record_feedback(self, version: str, step: str, right: bool) -> None:
        """Feedback on an answer `version` gave in `step`: right or wrong."""
        with self.seen_lock:
            seen = self._seen(step, version)
            seen["feedback"] += 1
            seen["correct"] += int(right)

    def _seen(self, step: str, version: str) -> dict:
        """What this replica saw of `version` in `step` since its last report (under seen_lock)."""
        blank = {"requests": 0, "errors": 0, "latencies_s": [], "feedback": 0, "correct": 0}
        return self.seen.setdefault(step, {}).setdefault(version, blank)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.sync()
            except Exception:  # the controller restarting: keep the plan we have
                logger.exception("canary report failed; keeping the current plan")

    def sync(self) -> None:
        with self.seen_lock:
            seen, self.seen = self.seen, {}
            drifts, self.drifts = self.drifts, {}
        # Each version's drift once per report, not once per request: a PSI over the window costs
        # more than routing the request did.
        for by_version in seen.values():
            for version, stats in by_version.items():
                if drifts.get(version) is not None:
                    stats["psi"] = max(drifts[version].scores().values(), default=0.0)
        plan = self.controller.report.remote(seen).result(timeout_s=30)
        self.apply(plan)

    def apply(self, plan: dict) -> None:
        version = plan["challenger"]
        current = self.challenger
        if current is not None and plan["champion"] == str(current.version):
            self.share, self.challenger = 0.0, None
            self.adopt(current)  # promoted: the loaded challenger is the champion now, no reload
            return
        if version is None:
            self.share, self.challenger = 0.0, None
            return
        if current is None or str(current.version) != version:
            if version == self.refused:
                return
            self.share = 0.0
            try:
                self.challenger = self.load(f"models:/{self.name}/{version}")
            except LoadFailed:
                self.refused = version
                logger.exception("challenger version %s failed to load; this replica routes it nothing", version)
                return
        if plan["step_key"] != self.step_key:
            self.dealt = 0
        self.sticky, self.step_key = plan["sticky"], plan["step_key"]
        self.share = float(plan["share"])
        if self.metrics is not None:
            self.metrics.canary_share(version, self.share)

    def stop(self) -> None:
        self._stop.set()


# The rollout's MLflow run: parameters, one set of metrics per judged step, the outcome and a timeline.


def _start_run(tracking_uri: str, name: str, rollout: Rollout, settings) -> str:
    from dataclasses import asdict

    from raylane.tracking import _client

    client = _client(tracking_uri)
    source = client.get_model_version(name, rollout.version).run_id
    experiment_id = client.get_run(source).info.experiment_id if source else "0"
    run = client.create_run(
        experiment_id,
        run_name=f"rollout {name} v{rollout.champion or '-'} -> v{rollout.version}",
        tags={"raylane.stage": "rollout", "model": name, "challenger": rollout.version, "champion": rollout.champion},
    )
    for key, value in asdict(settings).items():
        client.log_param(run.info.run_id, f"canary.{key}", str(value))
    return run.info.run_id


def _log_step(tracking_uri: str, rollout: Rollout, entry: dict) -> None:
    from raylane.tracking import _client

    if not rollout.run_id:
        return
    client, step = _client(tracking_uri), entry["step"]
    client.log_metric(rollout.run_id, "share", entry["share"], step=step)
    for role in ("challenger", "champion"):
        for key, value in entry[role].items():
            client.log_metric(rollout.run_id, f"{role}_{key}", float(value), step=step)


def _end_run(tracking_uri: str, rollout: Rollout, settings) -> None:
    from raylane.plots import rollout_timeline_figure
    from raylane.tracking import _client

    if not rollout.run_id:
        return
    client = _client(tracking_uri)
    client.set_tag(rollout.run_id, "outcome", rollout.state)
    client.set_tag(rollout.run_id, "reason", rollout.reason[:4000])
    client.log_dict(rollout.run_id, {"rollout": rollout.__dict__, "steps": list(settings.steps)}, "rollout.json")
    if rollout.history:
        figure = rollout_timeline_figure(rollout.history, f"v{rollout.version}: {rollout.state}")
        client.log_figure(rollout.run_id, figure, "rollout_timeline.png")
        import matplotlib.pyplot as plt

        plt.close(figure)
    client.set_terminated(rollout.run_id, "FINISHED" if rollout.state != RUNNING else "KILLED")
