"""The replicas' Prometheus metrics, through Ray Serve's metrics API: Ray exports them (prefixed
`ray_`, with deployment/replica/application tags) on every node's metrics port, beside Serve's own.

One set per replica process, created when the replica starts.
"""

from __future__ import annotations

from raylane.drift import LENGTH_EDGES, DriftWindow

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class ReplicaMetrics:
    def __init__(self):
        from ray.serve import metrics

        self.requests = metrics.Counter(
            "raylane_requests",
            description="HTTP requests answered, by route and status code",
            tag_keys=("route", "status"),
        )
        self.latency = metrics.Histogram(
            "raylane_request_latency_s",
            description="Time from request to response inside the replica, seconds",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=("route",),
        )
        self.batch_size = metrics.Histogram(
            "raylane_batch_size", description="Inputs scored in one forward pass", boundaries=BATCH_BOUNDARIES
        )
        self.predictions = metrics.Counter(
            "raylane_predictions", description="Inputs scored, by predicted label", tag_keys=("label",)
        )
        self.input_tokens = metrics.Histogram(
            "raylane_input_tokens",
            description="Length of each classified text in tokens (after truncation)",
            boundaries=[float(edge) for edge in LENGTH_EDGES[1:]],
        )
        self.drift = metrics.Gauge(
            "raylane_drift_psi",
            description="PSI of recent predictions' features (label, input_tokens, brightness, value) against the "
            "training split",
            tag_keys=("feature",),
        )
        self.model_version = metrics.Gauge("raylane_model_version", description="Registry version being served")

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.inc(1, tags={"route": route, "status": str(status)})
        self.latency.observe(seconds, tags={"route": route})

    def observe_batch(self, observations: list[dict], drift: DriftWindow | None) -> None:
        """One forward pass: its size, the labels predicted, the texts' lengths, and the drift of
        the window these observations join."""
        self.batch_size.observe(len(observations))
        for observation in observations:
            label = observation.get("label")
            for name in label if isinstance(label, list) else ([label] if label is not None else []):
                self.predictions.inc(1, tags={"label": name})
            if "input_tokens" in observation:
                self.input_tokens.observe(float(observation["input_tokens"]))
        if drift is not None:
            drift.add(observations)
            for feature, value in drift.scores().items():
                self.drift.set(value, tags={"feature": feature})

    def serving(self, version: str | None) -> None:
        if version and version.isdigit():
            self.model_version.set(float(version))


_metrics: ReplicaMetrics | None = None


class Unexported(ReplicaMetrics):
    """Outside a real replica (Serve's local testing mode) there is no exporter: record nothing,
    but keep the drift window up to date, which GET /model reports."""

    def __init__(self):
        pass

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        pass

    def observe_batch(self, observations: list[dict], drift: DriftWindow | None) -> None:
        if drift is not None:
            drift.add(observations)

    def serving(self, version: str | None) -> None:
        pass


def replica_metrics() -> ReplicaMetrics:
    """This process's metrics (the HTTP middleware and the replica share them)."""
    global _metrics
    if _metrics is None:
        from ray.serve.context import _get_internal_replica_context

        _metrics = ReplicaMetrics() if _get_internal_replica_context() is not None else Unexported()
    return _metrics
