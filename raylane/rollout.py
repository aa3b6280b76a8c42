"""Canary rollouts, what does not need Ray: the rollout's state as the registry keeps it, the
evidence a step gathers per version, the rules that judge a step, and the moves of aliases that
end a rollout (promote, roll back, abort), by the app's controller or by hand.

The state lives in the registry (a tag of the registered model), not in a replica's or the
controller's memory: a controller that restarts resumes the rollout at its recorded step, and
`raylane rollout status | promote | abort` reads and changes the same record without Ray.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field

from raylane.config.schema import CanarySettings

ROLLOUT_TAG = "raylane.rollout"
CHAMPION, CHALLENGER, PREVIOUS, REJECTED = "champion", "challenger", "previous", "rejected"
RUNNING, PROMOTED, ROLLED_BACK, ABORTED = "running", "promoted", "rolled_back", "aborted"


@dataclass
class Rollout:
    """One challenger's walk through the steps, as recorded in the registry."""

    version: str  # the challenger
    champion: str  # the champion it started against
    step: int = 0  # index into serve.canary.steps
    state: str = RUNNING
    started: float = field(default_factory=time.time)
    step_started: float = field(default_factory=time.time)
    reason: str = ""
    run_id: str = ""  # the MLflow run the rollout logs to
    history: list[dict] = field(default_factory=list)  # one entry per judged step

    def walks(self, challenger: str | None) -> bool:
        """Whether this record is the running rollout of `challenger` (the version aliased so)."""
        return self.state == RUNNING and self.version == challenger

    def share(self, steps: list[float]) -> float:
        """Percent of requests the challenger takes now."""
        return float(steps[self.step]) if self.state == RUNNING else 0.0

    @property
    def step_key(self) -> str:
        """Names the step: evidence gathered under another step is not counted for this one."""
        return f"{self.version}:{self.step}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Rollout:
        return cls(**json.loads(text))


@dataclass
class Evidence:
    """What one version did in one step, all replicas together."""

    requests: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    psi: float = 0.0  # the largest drift PSI the replicas last reported for this version
    feedback: int = 0  # signed feedback on this version's answers (serve.feedback)
    correct: int = 0  # of which the answer was right

    LATENCIES_KEPT = 5000

    def add(self, report: dict) -> None:
        self.requests += report.get("requests", 0)
        self.errors += report.get("errors", 0)
        self.feedback += report.get("feedback", 0)
        self.correct += report.get("correct", 0)
        self.latencies_s = (self.latencies_s + list(report.get("latencies_s", ())))[-self.LATENCIES_KEPT :]
        if "psi" in report:
            self.psi = max(self.psi, float(report["psi"]))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def feedback_accuracy(self) -> float:
        return self.correct / self.feedback if self.feedback else 0.0

    def p95_s(self) -> float:
        return percentile(self.latencies_s, 95)

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p50_ms": round(percentile(self.latencies_s, 50) * 1000, 2),
            "p95_ms": round(self.p95_s() * 1000, 2),
            "psi": round(self.psi, 4),
            "feedback": self.feedback,
            "feedback_accuracy": round(self.feedback_accuracy, 4),
        }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Verdict:
    action: str  # "wait", "advance" or "rollback"
    reason: str = ""


def judge(
    challenger: Evidence, champion: Evidence, baseline_p95_s: float, settings: CanarySettings, step_age_s: float
) -> Verdict:
    """A step's verdict: wait until the challenger has answered min_requests (and step_s has
    passed), then advance if every rule holds, else roll back naming the first rule broken.
    `baseline_p95_s` is the champion's p95 when this step has too few of its requests to say
    (the last step sends it none)."""
    if challenger.requests < settings.min_requests:
        return Verdict("wait")
    if challenger.error_rate > settings.max_error_rate:
        return Verdict(
            "rollback",
            f"serve.canary.max_error_rate: {challenger.errors} of {challenger.requests} requests failed "
            f"({challenger.error_rate:.3f} > {settings.max_error_rate})",
        )
    reference = champion.p95_s() if champion.requests >= settings.min_requests else baseline_p95_s
    if reference > 0 and challenger.p95_s() > settings.max_p95_ms_ratio * reference:
        return Verdict(
            "rollback",
            f"serve.canary.max_p95_ms_ratio: challenger p95 {challenger.p95_s() * 1000:.1f} ms is over "
            f"{settings.max_p95_ms_ratio} x the champion's {reference * 1000:.1f} ms",
        )
    if challenger.psi > settings.max_psi:
        return Verdict(
            "rollback",
            f"serve.canary.max_psi: the challenger's answers drift from its training split, PSI "
            f"{challenger.psi:.2f} > {settings.max_psi}",
        )
    # Feedback comes when people send it: the rule is judged once a step has min_feedback of it,
    # and does not hold a step back that has less.
    if settings.min_feedback_accuracy > 0 and challenger.feedback >= settings.min_feedback:
        if challenger.feedback_accuracy < settings.min_feedback_accuracy:
            return Verdict(
                "rollback",
                f"serve.canary.min_feedback_accuracy: {challenger.correct} of {challenger.feedback} answers "
                f"right by feedback ({challenger.feedback_accuracy:.3f} < {settings.min_feedback_accuracy})",
            )
    if step_age_s < settings.step_s:
        return Verdict("wait")
    return Verdict("advance")


def dealt_to_challenger(n: int, share: float) -> bool:
    """Whether the n-th request (from 1) of a step goes to the challenger: when n x share crosses
    a whole percent. Any first n requests then hold the share to within one request."""
    return math.floor(n * share / 100) > math.floor((n - 1) * share / 100)


# The registry side: read the record and the aliases, and end a rollout.


def _client(tracking_uri: str):
    from raylane.tracking import _client as client

    return client(tracking_uri)


def registry_state(tracking_uri: str, name: str) -> tuple[dict[str, str], Rollout | None]:
    """(alias -> version, the rollout record) of the registered model, from one read; ({}, None)
    when it does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        model = _client(tracking_uri).get_registered_model(name)
    except MlflowException:
        return {}, None
    text = model.tags.get(ROLLOUT_TAG)
    return {a: str(v) for a, v in model.aliases.items()}, (Rollout.from_json(text) if text else None)


def read_rollout(tracking_uri: str, name: str) -> Rollout | None:
    return registry_state(tracking_uri, name)[1]


def write_rollout(tracking_uri: str, name: str, rollout: Rollout) -> None:
    _client(tracking_uri).set_registered_model_tag(name, ROLLOUT_TAG, rollout.to_json())


def aliases(tracking_uri: str, name: str) -> dict[str, str]:
    return registry_state(tracking_uri, name)[0]


def promote(tracking_uri: str, name: str, rollout: Rollout, reason: str, alias: str = CHAMPION) -> Rollout:
    """The challenger gets `alias` (the champion's); the champion it replaces becomes `previous`."""
    client = _client(tracking_uri)
    client.set_registered_model_alias(name, alias, rollout.version)
    if rollout.champion and rollout.champion != rollout.version:
        client.set_registered_model_alias(name, PREVIOUS, rollout.champion)
    _delete_alias(client, name, CHALLENGER)
    client.set_model_version_tag(name, rollout.version, "rollout", f"{PROMOTED}: {reason}"[:4000])
    return _ended(tracking_uri, name, rollout, PROMOTED, reason)


def roll_back(tracking_uri: str, name: str, rollout: Rollout, reason: str, state: str = ROLLED_BACK) -> Rollout:
    """The challenger takes no more traffic and is marked `rejected`; the champion is untouched."""
    client = _client(tracking_uri)
    client.set_registered_model_alias(name, REJECTED, rollout.version)
    _delete_alias(client, name, CHALLENGER)
    client.set_model_version_tag(name, rollout.version, "rollout", f"{state}: {reason}"[:4000])
    return _ended(tracking_uri, name, rollout, state, reason)


def _ended(tracking_uri: str, name: str, rollout: Rollout, state: str, reason: str) -> Rollout:
    rollout.state, rollout.reason = state, reason
    write_rollout(tracking_uri, name, rollout)
    return rollout


def _delete_alias(client, name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException:
        pass  # already gone: someone ended the rollout by hand
