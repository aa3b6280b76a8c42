"""The Ray Serve application. Built by `build_app` from a model URI (the registry's champion by
default) and typed arguments: it never imports training code, only the core's predictor.

Run it with `python -m raylane serve`, `serve run raylane.serve.app:build_app model_uri=...`, or on a
cluster with `serve deploy configs/serve.yaml`.
"""

# No `from __future__ import annotations`: FastAPI must see the real request types on the
# ingress methods, or a JSON body is mistaken for query parameters (422).
import dataclasses
import functools
import typing
from typing import Literal

from fastapi import FastAPI, File, UploadFile
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from ray import serve

from raylane.config import ConfigError, ServeConfig
from raylane.console import verbose
from raylane.serve.auth import key_digests
from raylane.serve.guard import RequestGuard
from raylane.serve.replica import Replica
from raylane.tasks import TASK_NAMES, Task, get_task
from raylane.tasks.text import TEXT_CEILING, StrictBody, TextsRequest

# The serve section's settings that are the pipeline's, not the app's: where the proxies listen
# (and whether that may be without keys), what `run` does once deployed, and the model, which the
# app takes resolved (`model_uri` below).
PIPELINE_ONLY = ("model_uri", "host", "port", "proxy_location", "allow_unauthenticated", "keep_running", "sample_text")


class _AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(description="models:/<name>@<alias>, models:/<name>/<version> or a local model dir")
    task: Literal[TASK_NAMES] = Field("text_classification", description="What the model does (the config's task)")
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


NAME_CEILING = 200


class FeedbackRequest(StrictBody):
    text: str = Field(min_length=1, max_length=TEXT_CEILING, description="The text that was scored")
    label: str = Field(
        min_length=1,
        max_length=10 * NAME_CEILING,
        description="The right label (one of GET /model's; multi-label: a JSON list; regression: the number)",
    )
    prediction_id: str = Field(
        min_length=1, max_length=NAME_CEILING, description="The prediction_id POST /predict gave for this text"
    )


PredictRequest = TextsRequest  # the text tasks' request, by its old name


def response_model(task: Task) -> type[BaseModel]:
    """The POST /predict answer's schema for `task`: its target's answer plus a prediction id."""
    prediction = create_model(
        "Prediction",
        __base__=task.target.answer_model(),
        prediction_id=(str, Field(description="Quote it in POST /feedback")),
    )
    return create_model(
        "PredictResponse",
        predictions=(list[prediction], ...),
        model_name=(str | None, None),
        model_version=(str | None, None),
    )


def _observe(route: str, status: int, seconds: float) -> None:
    from raylane.serve.metrics import replica_metrics

    replica_metrics().observe_request(route, status, seconds)


def guarded_api(args: ServeArgs, description: str) -> FastAPI:
    """A FastAPI app behind the request guard: keys and body size are checked before anything
    of a request is parsed, and every answer is counted (raylane.serve.guard)."""
    api = FastAPI(title="raylane", description=description)
    api.add_middleware(
        RequestGuard,
        digests=functools.partial(key_digests, args.api_keys_env, args.api_keys_file),
        max_request_bytes=args.max_request_bytes,
        routes=api.router.routes,
        public_docs=args.public_docs,
        observe=_observe,
    )
    return api


def _deployment(args: ServeArgs):
    """The HTTP-bound deployment class, made fresh per build with a FastAPI app of its own.

    Fresh because Serve's local testing mode adds middleware to the app it runs, and a shared
    module-level app carrying it can no longer be pickled for the next deployment; defined in
    here so the routes travel with the class (by value) to the replicas, rather than being
    looked up again, unbound, in the replica's import of this module."""
    task = get_task(args.task)
    api = guarded_api(args, f"{task.name} ({task.description}) served by raylane on Ray Serve.")
    # The task decides what a request holds and what an answer says.
    Request = task.inputs.request_model()  # noqa: N806 (a class, named as one)
    Response = response_model(task)  # noqa: N806

    @serve.deployment(name="Classifier", health_check_period_s=10, health_check_timeout_s=30)
    @serve.ingress(api)
    class Classifier(Replica):
        @api.post("/predict", response_model=Response)
        async def predict(self, request: Request) -> dict:
            return await super().predict(request)

        @api.post("/predict/upload", response_model=Response)
        async def upload(self, files: list[UploadFile] = File(description="One input per file")) -> dict:
            """The same as POST /predict, with each input as an uploaded file (multipart)."""
            return await super().predict_upload([await f.read() for f in files])

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
        # Replica INFO lines only with --verbose (where this is built) or to carry the access log.
        "logging_config": {
            "enable_access_log": args.access_log,
            "log_level": "INFO" if args.access_log or verbose() else "WARNING",
        },
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
    if args.task == "causal_lm":  # chat: its own routes and replica (raylane.serve.chat)
        from raylane.serve.chat import build_chat_app

        return build_chat_app(args)
    return _deployment(args).options(**deployment_options(args)).bind(args)
