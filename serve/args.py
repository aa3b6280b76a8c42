"""The serve app's typed arguments (`ServeArgs`: what `serve deploy configs/serve.yaml` passes as
`args`, what raylane's own deploy builds from the config) and the deployment options that follow
from them. Every app, scoring or chat, is built from these."""

# No `from __future__ import annotations`: pydantic builds the model from the real types.
import dataclasses
import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from raylane.config import ConfigError, ServeConfig
from raylane.console import verbose
from raylane.tasks import TASK_NAMES

# The serve section's settings that are the pipeline's, not the app's: where the proxies listen
# (Serve's own http_options, which the app checks at build: `raylane.serve.app`), what `run` does
# once deployed, and the model, which the app takes resolved (`model_uri` below).
PIPELINE_ONLY = ("model_uri", "host", "port", "proxy_location", "keep_running", "sample_text")


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


def deployment_options(args: ServeArgs) -> dict:
    """Replicas, their resources, how many requests each may hold (enough to fill batches), and
    how many more a proxy queues before it answers 503 with Retry-After."""
    from ray.serve.config import BackpressureConfig

    resources = {"num_cpus": args.replica_cpus}
    if args.replica_gpus:  # only when asked: local testing mode warns about any num_gpus
        resources["num_gpus"] = args.replica_gpus
    options = {
        "max_ongoing_requests": max(args.max_ongoing_requests, args.max_batch_size),
        "max_queued_requests": args.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=args.retry_after_s),
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
