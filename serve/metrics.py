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
        self.version_requests = metrics.Counter(
            "raylane_version_requests",
            description="Requests answered per model version (champion, or a canary's challenger), by outcome",
            tag_keys=("version", "outcome"),
        )
        self.version_latency = metrics.Histogram(
            "raylane_version_latency_s",
            description="Time a model version took to answer a request inside the replica, seconds",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=("version",),
        )
        self.version_feedback = metrics.Counter(
            "raylane_version_feedback",
            description="Signed feedback on a model version's answers (serve.feedback), by whether each was right",
            tag_keys=("version", "outcome"),
        )
        self.share = metrics.Gauge(
            "raylane_canary_share",
            description="Percent of requests routed to a canary's challenger",
            tag_keys=("version",),
        )

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

    def observe_version(self, version: str, ok: bool, seconds: float) -> None:
        self.version_requests.inc(1, tags={"version": version, "outcome": "ok" if ok else "error"})
        if ok:
            self.version_latency.observe(seconds, tags={"version": version})

    def observe_feedback(self, version: str, right: bool) -> None:
        self.version_feedback.inc(1, tags={"version": version, "outcome": "right" if right else "wrong"})

    def canary_share(self, version: str, percent: float) -> None:
        self.share.set(percent, tags={"version": version})


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

    def observe_version(self, version: str, ok: bool, seconds: float) -> None:
        pass

    def observe_feedback(self, version: str, right: bool) -> None:
        pass

    def canary_share(self, version: str, percent: float) -> None:
        pass


def replica_metrics() -> ReplicaMetrics:
    """This process's metrics (the HTTP middleware and the replica share them)."""
    global _metrics
    if _metrics is None:
        from ray.serve.context import _get_internal_replica_context

        _metrics = ReplicaMetrics() if _get_internal_replica_context() is not None else Unexported()
    return _metrics


TOKEN_BOUNDARIES = [1, 4, 16, 64, 128, 256, 512, 1024, 2048]
RATE_BOUNDARIES = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
GENERATION_BOUNDARIES_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


class GenerationMetrics:
    """A chat replica's: tokens generated, how fast, how long a request waited before its
    generation started and before its first token, how many requests each `generate` call
    carried. Requests by route and status are ReplicaMetrics' (the guard counts them)."""

    def __init__(self):
        from ray.serve import metrics

        self.tokens = metrics.Counter("raylane_generated_tokens", description="Tokens generated (eos included)")
        self.completions = metrics.Counter(
            "raylane_completions", description="Answers generated, by finish reason", tag_keys=("finish_reason",)
        )
        self.batch_size = metrics.Histogram(
            "raylane_generation_batch_size",
            description="Requests generated together in one generate call",
            boundaries=BATCH_BOUNDARIES,
        )
        self.seconds = metrics.Histogram(
            "raylane_generation_s",
            description="Wall time of one generate call, seconds",
            boundaries=GENERATION_BOUNDARIES_S,
        )
        self.rate = metrics.Histogram(
            "raylane_generation_tokens_per_s",
            description="Tokens generated per second by one generate call (all its rows)",
            boundaries=RATE_BOUNDARIES,
        )
        self.first_token = metrics.Histogram(
            "raylane_time_to_first_token_s",
            description="From a request reaching the replica to its first generated token, seconds",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=("stream",),
        )
        self.queued = metrics.Histogram(
            "raylane_queue_s",
            description="From a request reaching the replica to its generation starting, seconds",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=("stream",),
        )

    def observe_generate(self, rows: int, tokens: int, seconds: float, finish_reasons: list[str]) -> None:
        self.batch_size.observe(rows)
        self.tokens.inc(tokens)
        self.seconds.observe(seconds)
        if seconds > 0:
            self.rate.observe(tokens / seconds)
        for reason in finish_reasons:
            self.completions.inc(1, tags={"finish_reason": reason})

    def observe_waits(self, queued_s: float, first_token_s: float, stream: bool) -> None:
        self.queued.observe(queued_s, tags={"stream": str(stream).lower()})
        self.first_token.observe(first_token_s, tags={"stream": str(stream).lower()})


class _UnexportedGeneration(GenerationMetrics):
    def __init__(self):
        pass

    def observe_generate(self, rows: int, tokens: int, seconds: float, finish_reasons: list[str]) -> None:
        pass

    def observe_waits(self, queued_s: float, first_token_s: float, stream: bool) -> None:
        pass


_generation_metrics: GenerationMetrics | None = None


def generation_metrics() -> GenerationMetrics:
    """This process's generation metrics (none exported outside a real replica)."""
    global _generation_metrics
    if _generation_metrics is None:
        from ray.serve.context import _get_internal_replica_context

        in_replica = _get_internal_replica_context() is not None
        _generation_metrics = GenerationMetrics() if in_replica else _UnexportedGeneration()
    return _generation_metrics
