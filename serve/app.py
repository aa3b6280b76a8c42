"""The Ray Serve application. Built by `build_app` from a model URI (the registry's champion by
default) and typed arguments: it never imports training code, only the core's predictor.

Run it with `python -m pipelines serve`, `serve run serve.app:build_app model_uri=...`, or on a
cluster with `serve deploy configs/serve.yaml`.
"""

# No `from __future__ import annotations`: FastAPI must see the real request types on the
# ingress methods, or a JSON body is mistaken for query parameters (422).
import os
import time

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from ray import serve

CANARY_TEXT = "health check"


class ServeArgs(BaseModel):
    model_uri: str = Field(description="models:/<name>@<alias>, models:/<name>/<version> or a local model dir")
    tracking_uri: str = Field("", description="MLflow tracking URI to resolve models:/ URIs against; "
                                                "empty: $MLFLOW_TRACKING_URI of the replica")
    max_texts: int = Field(64, ge=1, description="Most texts accepted in one request")
    num_replicas: int = Field(1, ge=1)


class PredictRequest(BaseModel):
    texts: list[str] = Field(min_length=1, description="Texts to classify")
    top_k: int = Field(1, ge=1, le=100, description="Labels returned per text, best first")


class LabelScore(BaseModel):
    label: str
    score: float


class Prediction(LabelScore):
    top_k: list[LabelScore]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model_name: str | None
    model_version: str | None


api = FastAPI(title="raylane", description="Text classification served by raylane on Ray Serve.")


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress(api)
class Classifier:
    def __init__(self, args: ServeArgs):
        from raylane.predictor import Predictor
        from raylane.registry import resolve_model

        resolved = resolve_model(args.model_uri, args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""))
        self.predictor = Predictor(resolved.model_dir)
        self.args = args
        self.model_name, self.model_version = resolved.name, resolved.version
        self.loaded_at = time.time()

    @api.post("/predict", response_model=PredictResponse)
    def predict(self, request: PredictRequest) -> PredictResponse:
        if len(request.texts) > self.args.max_texts:
            raise HTTPException(413, f"{len(request.texts)} texts in one request; the limit is {self.args.max_texts}")
        return PredictResponse(
            predictions=self.predictor.predict(request.texts, request.top_k),
            model_name=self.model_name,
            model_version=self.model_version,
        )

    @api.get("/healthz")
    def healthz(self) -> dict:
        # A real forward pass: a replica whose model is broken must not look healthy.
        self.predictor.predict([CANARY_TEXT])
        return {"status": "ok", "model_version": self.model_version}

    @api.get("/model")
    def model(self) -> dict:
        return {"name": self.model_name, "version": self.model_version, "uri": self.args.model_uri,
                "labels": self.predictor.labels, "loaded_at": self.loaded_at}

    def check_health(self) -> None:
        self.predictor.predict([CANARY_TEXT])


def build_app(args: ServeArgs) -> serve.Application:
    return Classifier.options(num_replicas=args.num_replicas).bind(args)
