"""The Ray Serve application. Built by `build_app` from a model URI (the registry's champion by
default) and typed arguments: it never imports training code, only the core's predictor.

Run it with `python -m pipelines serve`, `serve run serve.app:build_app model_uri=...`, or on a
cluster with `serve deploy configs/serve.yaml`.
"""

# No `from __future__ import annotations`: FastAPI must see the real request types on the
# ingress methods, or a JSON body is mistaken for query parameters (422).
import os
import time
import uuid
from typing import Literal

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field
from ray import serve

CANARY_TEXT = "health check"


class ServeArgs(BaseModel):
    model_uri: str = Field(description="models:/<name>@<alias>, models:/<name>/<version> or a local model dir")
    tracking_uri: str = Field("", description="MLflow tracking URI to resolve models:/ URIs against; "
                                                "empty: $MLFLOW_TRACKING_URI of the replica")
    max_texts: int = Field(64, ge=1, description="Most texts accepted in one request")
    max_chars: int = Field(5000, ge=1, description="Longest text accepted, in characters")
    on_too_long: Literal["reject", "truncate"] = Field("reject", description="422 or cut to max_chars")
    num_replicas: int = Field(1, ge=1)
    api_keys_env: str = Field("", description="Environment variable with the API keys; empty: no auth")
    api_keys_file: str = Field("", description="Secret file with the API keys, one per line")
    feedback_uri: str = Field("", description="Where POST /feedback writes; empty: feedback disabled")
    feedback_format: Literal["jsonl", "parquet"] = Field("jsonl")
    poll_interval_s: float = Field(30.0, ge=0, description="How often a models:/<name>@<alias> URI is "
                                                           "re-resolved to follow the alias; 0: never")


class PredictRequest(BaseModel):
    texts: list[str] = Field(min_length=1, description="Texts to classify")
    top_k: int = Field(1, ge=1, le=100, description="Labels returned per text, best first")


class LabelScore(BaseModel):
    label: str
    score: float


class Prediction(LabelScore):
    top_k: list[LabelScore]
    prediction_id: str = Field(description="Quote it in POST /feedback")


class FeedbackRequest(BaseModel):
    text: str = Field(min_length=1, description="The text that was classified")
    label: str = Field(min_length=1, description="The right label, one of GET /model's labels")
    prediction_id: str | None = Field(None, description="The prediction this corrects or confirms")


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model_name: str | None
    model_version: str | None


class Replica:
    """One replica: the model, the limits, the keys. Its HTTP routes are bound in `_deployment`."""

    def __init__(self, args: ServeArgs):
        from serve.auth import load_keys
        from serve.swap import AliasFollower, alias_of

        self.args = args
        self.keys = load_keys(args.api_keys_env, args.api_keys_file)
        self.tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        self.loaded = self._load(args.model_uri)
        followed = alias_of(args.model_uri)
        self.follower = None
        if followed and args.poll_interval_s > 0:
            name, alias = followed
            self.follower = AliasFollower(self.tracking_uri, name, alias, self.loaded.version, args.poll_interval_s,
                                          on_change=lambda version: self._swap_to(f"models:/{name}/{version}"))

    def _load(self, model_uri: str):
        from raylane.predictor import Predictor
        from raylane.registry import resolve_model
        from serve.swap import Loaded

        resolved = resolve_model(model_uri, self.tracking_uri)
        return Loaded(Predictor(resolved.model_dir), resolved.name, resolved.version, time.time())

    def _swap_to(self, model_uri: str) -> None:
        new = self._load(model_uri)
        new.predictor.predict([CANARY_TEXT])  # only a model that answers replaces the one serving
        self.loaded = new  # one reference assignment: a request sees the old model or the new, whole

    def _authorize(self, authorization) -> None:
        from serve.auth import authorized

        header = authorization if isinstance(authorization, str) else None  # a direct call passes no header
        if not authorized(header, self.keys):
            raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})

    def _within_limits(self, texts: list[str]) -> list[str]:
        if len(texts) > self.args.max_texts:
            raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {self.args.max_texts}")
        too_long = [i for i, t in enumerate(texts) if len(t) > self.args.max_chars]
        if too_long and self.args.on_too_long == "reject":
            raise HTTPException(422, f"texts {too_long[:10]} are longer than {self.args.max_chars} characters")
        return [t[: self.args.max_chars] for t in texts]

    def predict(self, request: PredictRequest, authorization: str | None = Header(None)) -> PredictResponse:
        self._authorize(authorization)
        texts = self._within_limits(request.texts)
        loaded = self.loaded  # this request's model, whatever a swap does meanwhile
        predictions = [{**p, "prediction_id": uuid.uuid4().hex} for p in loaded.predictor.predict(texts, request.top_k)]
        return PredictResponse(predictions=predictions, model_name=loaded.name, model_version=loaded.version)

    def feedback(self, request: FeedbackRequest, authorization: str | None = Header(None)) -> dict:
        from serve.feedback import write_feedback

        self._authorize(authorization)
        if not self.args.feedback_uri:
            raise HTTPException(404, "feedback is not enabled on this deployment (serve.feedback_uri)")
        loaded = self.loaded
        if request.label not in loaded.predictor.labels:
            raise HTTPException(422, f"label {request.label!r} is not one of {loaded.predictor.labels}")
        (text,) = self._within_limits([request.text])
        record = {"text": text, "label": request.label, "prediction_id": request.prediction_id or "",
                  "model_name": loaded.name or "", "model_version": loaded.version or "",
                  "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return {"stored": write_feedback(self.args.feedback_uri, [record], self.args.feedback_format)}

    def healthz(self) -> dict:
        # A real forward pass: a replica whose model is broken must not look healthy. Open to
        # load balancers and probes, which carry no key.
        loaded = self.loaded
        loaded.predictor.predict([CANARY_TEXT])
        return {"status": "ok", "model_version": loaded.version}

    def model(self, authorization: str | None = Header(None)) -> dict:
        self._authorize(authorization)
        loaded = self.loaded
        return {"name": loaded.name, "version": loaded.version, "uri": self.args.model_uri,
                "labels": loaded.predictor.labels, "loaded_at": loaded.loaded_at,
                "follows": self.args.model_uri if self.follower else None}

    def check_health(self) -> None:
        self.loaded.predictor.predict([CANARY_TEXT])

    def __del__(self):
        if getattr(self, "follower", None):
            self.follower.stop()


def _deployment():
    """The HTTP-bound deployment class, made fresh per build with a FastAPI app of its own.

    Fresh because Serve's local testing mode adds middleware to the app it runs, and a shared
    module-level app carrying it can no longer be pickled for the next deployment; defined in
    here so the routes travel with the class (by value) to the replicas, rather than being
    looked up again, unbound, in the replica's import of this module."""
    api = FastAPI(title="raylane", description="Text classification served by raylane on Ray Serve.")

    @serve.deployment(name="Classifier", health_check_period_s=10, health_check_timeout_s=30)
    @serve.ingress(api)
    class Classifier(Replica):
        @api.post("/predict", response_model=PredictResponse)
        def predict(self, request: PredictRequest, authorization: str | None = Header(None)) -> PredictResponse:
            return super().predict(request, authorization)

        @api.post("/feedback")
        def feedback(self, request: FeedbackRequest, authorization: str | None = Header(None)) -> dict:
            return super().feedback(request, authorization)

        @api.get("/healthz")
        def healthz(self) -> dict:
            return super().healthz()

        @api.get("/model")
        def model(self, authorization: str | None = Header(None)) -> dict:
            return super().model(authorization)

    return Classifier


def build_app(args: ServeArgs) -> serve.Application:
    return _deployment().options(num_replicas=args.num_replicas).bind(args)
