"""The Ray Serve application. Built by `build_app` from a model URI (the registry's champion by
default) and typed arguments: it never imports training code, only the core's predictor.

Run it with `python -m raylane serve`, `serve run raylane.serve.app:build_app model_uri=...`, or on a
cluster with `serve deploy configs/serve.yaml`.
"""

# No `from __future__ import annotations`: FastAPI must see the real request types on the
# ingress methods, or a JSON body is mistaken for query parameters (422).
import dataclasses
import functools
import os
import time
import typing
from typing import Annotated

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from ray import serve

from raylane.config import ConfigError, ServeConfig
from raylane.serve.auth import key_digests
from raylane.serve.guard import RequestGuard

CANARY_TEXT = "health check"


# The serve section's settings that are the pipeline's, not the app's: where the proxies listen
# (and whether that may be without keys), what `run` does once deployed, and the model, which the
# app takes resolved (`model_uri` below).
PIPELINE_ONLY = ("model_uri", "host", "port", "proxy_location", "allow_unauthenticated", "keep_running", "sample_text")


class _AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(description="models:/<name>@<alias>, models:/<name>/<version> or a local model dir")
    tracking_uri: str = Field(
        "",
        description="MLflow tracking URI to resolve models:/ URIs against; empty: $MLFLOW_TRACKING_URI of the replica",
    )

    @model_validator(mode="after")
    def _checked_like_the_config(self):
        """The same checks, with the same messages, as the pipeline config's serve section."""
        settings = {name: getattr(self, name) for name in type(self).model_fields if hasattr(ServeConfig, name)}
        try:
            ServeConfig(**{k: v for k, v in settings.items() if k not in PIPELINE_ONLY})
        except ConfigError as err:
            raise ValueError(str(err)) from None
        if self.feedback and not self.feedback_uri:
            raise ValueError("config key 'serve.feedback_uri': feedback is on; say where it goes")
        return self


def _derive_serve_args() -> type[BaseModel]:
    """`ServeArgs`, the app's typed arguments (what `serve deploy configs/serve.yaml` passes as
    `args`), derived from the config's `ServeConfig`: each setting is declared once, with one
    type, default and help text, whichever way the app is started."""
    hints = typing.get_type_hints(ServeConfig)
    fields = {
        f.name: (hints[f.name], Field(f.default, description=f.metadata.get("help", "")))
        for f in dataclasses.fields(ServeConfig)
        if f.name not in PIPELINE_ONLY
    }
    return create_model("ServeArgs", __base__=_AppArgs, __module__=__name__, **fields)


ServeArgs = _derive_serve_args()


# Hard ceilings on every string a request can carry, whatever the settings: the configured limits
# (serve.max_chars, serve.max_texts) are checked inside, with messages that name them.
TEXT_CEILING = 100_000
NAME_CEILING = 200


class StrictBody(BaseModel):
    """A request body: unknown fields are an error (422), not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class PredictRequest(StrictBody):
    texts: list[Annotated[str, Field(max_length=TEXT_CEILING)]] = Field(
        min_length=1, max_length=10_000, description="Texts to classify"
    )
    top_k: int = Field(1, ge=1, le=100, description="Labels returned per text, best first")


class LabelScore(BaseModel):
    label: str
    score: float


class Prediction(LabelScore):
    top_k: list[LabelScore]
    prediction_id: str = Field(description="Quote it in POST /feedback")


class FeedbackRequest(StrictBody):
    text: str = Field(min_length=1, max_length=TEXT_CEILING, description="The text that was classified")
    label: str = Field(min_length=1, max_length=NAME_CEILING, description="The right label, one of GET /model's")
    prediction_id: str = Field(
        min_length=1, max_length=NAME_CEILING, description="The prediction_id POST /predict gave for this text"
    )


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model_name: str | None
    model_version: str | None


class Replica:
    """One replica: the model, the limits, the keys, the metrics. Its HTTP routes are bound in
    `_deployment`."""

    def __init__(self, args: ServeArgs):
        from ray.serve.context import _get_internal_replica_context

        from raylane.serve.auth import key_digests
        from raylane.serve.feedback import FeedbackSink, PredictionIds, load_secret
        from raylane.serve.metrics import replica_metrics
        from raylane.serve.swap import AliasFollower, alias_of

        self.args = args
        key_digests(args.api_keys_env, args.api_keys_file)  # a named key source that holds none fails now
        self.ids = PredictionIds(
            load_secret(args.feedback_secret_env, args.feedback_secret_file) if args.feedback else None
        )
        self.sink = None
        if args.feedback:
            self.sink = FeedbackSink(
                args.feedback_uri,
                args.feedback_format,
                replica=_replica_id(),
                max_bytes=int(args.feedback_max_mb * 2**20),
                flush_s=args.feedback_flush_s,
            )
        self.tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        self.metrics = replica_metrics()
        self.in_replica = _get_internal_replica_context() is not None
        if self.in_replica:
            self._score_batch.set_max_batch_size(args.max_batch_size)
            self._score_batch.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self.loaded = self._load(args.model_uri)
        self.metrics.serving(self.loaded.version)
        followed = alias_of(args.model_uri)
        self.follower = None
        if followed and args.poll_interval_s > 0:
            name, alias = followed
            self.follower = AliasFollower(
                self.tracking_uri,
                name,
                alias,
                self.loaded.version,
                args.poll_interval_s,
                on_change=lambda version: self._swap_to(f"models:/{name}/{version}"),
            )

    def _load(self, model_uri: str):
        from raylane.drift import DriftWindow, read_reference
        from raylane.predictor import Predictor
        from raylane.registry import resolve_model
        from raylane.serve.swap import Loaded

        resolved = resolve_model(model_uri, self.tracking_uri)
        predictor = Predictor(
            resolved.model_dir,
            quantize=self.args.quantize,
            prune_amount=self.args.prune_amount,
            threads=max(1, round(self.args.replica_cpus)),
        )
        reference = read_reference(resolved.model_dir)
        drift = DriftWindow(reference, predictor.labels, self.args.drift_window) if reference else None
        return Loaded(predictor, resolved.name, resolved.version, time.time(), drift)

    def _swap_to(self, model_uri: str) -> None:
        new = self._load(model_uri)
        new.predictor.predict([CANARY_TEXT])  # only a model that answers replaces the one serving
        self.loaded = new  # one reference assignment: a request sees the old model or the new, whole
        self.metrics.serving(new.version)

    def _within_limits(self, texts: list[str]) -> list[str]:
        if len(texts) > self.args.max_texts:
            raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {self.args.max_texts}")
        too_long = [i for i, t in enumerate(texts) if len(t) > self.args.max_chars]
        if too_long and self.args.on_too_long == "reject":
            raise HTTPException(422, f"texts {too_long[:10]} are longer than {self.args.max_chars} characters")
        return [t[: self.args.max_chars] for t in texts]

    async def _score_many(self, requests: list[list[str]]) -> list[tuple]:
        """Scores the texts of several concurrent requests in one forward pass; each request gets
        back its own rows and the model that scored them (a swap may land between batches)."""
        loaded = self.loaded
        texts = [text for request in requests for text in request]
        # On the event loop, blocking it, on purpose: requests arriving meanwhile wait in Ray's
        # queue and the next batch takes them all. In a worker thread the forward pass (Python
        # between kernels, holding the GIL) starved the loop that accepts requests, so batches
        # stayed at about one request and throughput at that of no batching (bench serve_batching).
        probs, lengths = loaded.predictor.scores(texts, raw=True)
        label_ids = probs.argmax(axis=1)
        self.metrics.observe_batch([loaded.predictor.labels[i] for i in label_ids], label_ids, lengths, loaded.drift)
        self.metrics.serving(loaded.version)  # per batch too: a value set while the replica starts can be lost
        out, start = [], 0
        for request in requests:
            out.append((loaded, probs[start : start + len(request)]))
            start += len(request)
        return out

    # Concurrent requests queue here and are scored together; size and wait are reset from the
    # config in __init__.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _score_batch(self, requests: list[list[str]]) -> list[tuple]:
        return await self._score_many(requests)

    async def _score(self, texts: list[str]) -> tuple:
        if self.in_replica:
            return await self._score_batch(texts)
        # Serve's local testing mode has no replica context, which @serve.batch needs (Ray 2.60).
        return (await self._score_many([texts]))[0]

    async def predict(self, request: PredictRequest) -> PredictResponse:
        texts = self._within_limits(request.texts)
        loaded, probs = await self._score(texts)
        predictions = [{**p, "prediction_id": self.ids.issue()} for p in loaded.predictor.ranked(probs, request.top_k)]
        return PredictResponse(predictions=predictions, model_name=loaded.name, model_version=loaded.version)

    def feedback(self, request: FeedbackRequest) -> dict:
        """A labelled example for retraining, for a prediction this deployment made."""
        from raylane.pii import PII_KINDS, mask_pii
        from raylane.serve.feedback import QuotaExceeded

        if self.sink is None:
            raise HTTPException(404, "feedback is not enabled on this deployment (serve.feedback)")
        if not self.ids.valid(request.prediction_id):
            raise HTTPException(422, "prediction_id is not one this deployment issued")
        loaded = self.loaded
        if request.label not in loaded.predictor.labels:
            raise HTTPException(422, f"label {request.label!r} is not one of {loaded.predictor.labels}")
        (text,) = self._within_limits([request.text])
        record = {
            "text": mask_pii(text, PII_KINDS)[0],  # personal data never reaches the sink
            "label": request.label,
            "prediction_id": request.prediction_id,
            "model_name": loaded.name or "",
            "model_version": loaded.version or "",
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            self.sink.add(record)
        except QuotaExceeded:
            raise HTTPException(429, "this replica's feedback quota is used up (serve.feedback_max_mb)") from None
        return {"accepted": True, "prediction_id": request.prediction_id}

    def healthz(self) -> dict:
        # A real forward pass: a replica whose model is broken must not look healthy. Open to
        # load balancers and probes, which carry no key.
        loaded = self.loaded
        loaded.predictor.predict([CANARY_TEXT])
        return {"status": "ok", "model_version": loaded.version}

    def model(self) -> dict:
        from raylane.compress import describe

        loaded = self.loaded
        drift = loaded.drift
        return {
            "name": loaded.name,
            "version": loaded.version,
            "uri": self.args.model_uri,
            "labels": loaded.predictor.labels,
            "loaded_at": loaded.loaded_at,
            "follows": self.args.model_uri if self.follower else None,
            "variant": describe(self.args.quantize, self.args.prune_amount),
            "drift": {
                "window": len(drift.window),
                "label_psi": drift.label_psi(),
                "input_tokens_psi": drift.length_psi(),
            }
            if drift
            else None,
        }

    def check_health(self) -> None:
        self.loaded.predictor.predict([CANARY_TEXT])

    def __del__(self):
        if getattr(self, "follower", None):
            self.follower.stop()
        if getattr(self, "sink", None):
            self.sink.close()  # what is buffered is written before the replica goes


def _replica_id() -> str:
    """This replica's name, for its partition of the feedback sink."""
    from ray.serve.context import _get_internal_replica_context

    context = _get_internal_replica_context()
    return context.replica_id.unique_id if context is not None else "local"


def _observe(route: str, status: int, seconds: float) -> None:
    from raylane.serve.metrics import replica_metrics

    replica_metrics().observe_request(route, status, seconds)


def _deployment(args: ServeArgs):
    """The HTTP-bound deployment class, made fresh per build with a FastAPI app of its own.

    Fresh because Serve's local testing mode adds middleware to the app it runs, and a shared
    module-level app carrying it can no longer be pickled for the next deployment; defined in
    here so the routes travel with the class (by value) to the replicas, rather than being
    looked up again, unbound, in the replica's import of this module."""
    api = FastAPI(title="raylane", description="Text classification served by raylane on Ray Serve.")
    # Keys and body size are checked before anything of a request is parsed (raylane.serve.guard).
    api.add_middleware(
        RequestGuard,
        digests=functools.partial(key_digests, args.api_keys_env, args.api_keys_file),
        max_request_bytes=args.max_request_bytes,
        routes=api.router.routes,
        public_docs=args.public_docs,
        observe=_observe,
    )

    @serve.deployment(name="Classifier", health_check_period_s=10, health_check_timeout_s=30)
    @serve.ingress(api)
    class Classifier(Replica):
        @api.post("/predict", response_model=PredictResponse)
        async def predict(self, request: PredictRequest) -> PredictResponse:
            return await super().predict(request)

        @api.post("/feedback")
        def feedback(self, request: FeedbackRequest) -> dict:
            return super().feedback(request)

        @api.get("/healthz")
        def healthz(self) -> dict:
            return super().healthz()

        @api.get("/model")
        def model(self) -> dict:
            return super().model()

    return Classifier


def deployment_options(args: ServeArgs) -> dict:
    """Replicas, their resources, and how many requests each may hold (enough to fill batches)."""
    resources = {"num_cpus": args.replica_cpus}
    if args.replica_gpus:  # only when asked: local testing mode warns about any num_gpus
        resources["num_gpus"] = args.replica_gpus
    options = {
        "max_ongoing_requests": max(args.max_ongoing_requests, args.max_batch_size),
        "logging_config": {"enable_access_log": args.access_log},
        "ray_actor_options": resources,
    }
    if args.max_replicas > args.num_replicas:
        options["autoscaling_config"] = {
            "min_replicas": args.num_replicas,
            "initial_replicas": args.num_replicas,
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests,
            "upscale_delay_s": args.upscale_delay_s,
            "downscale_delay_s": args.downscale_delay_s,
        }
    else:
        options["num_replicas"] = args.num_replicas
    return options


def build_app(args: ServeArgs) -> serve.Application:
    return _deployment(args).options(**deployment_options(args)).bind(args)
