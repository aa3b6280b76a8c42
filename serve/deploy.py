"""Deploying the app from a pipeline config, and talking to it over HTTP."""

from __future__ import annotations

import requests

from raylane.config import PipelineConfig
from raylane.console import verbose
from raylane.http import wait_until_ok
from raylane.serve.app import ServeArgs, build_app
from raylane.tracking import tracking_uri

APP_NAME = "raylane"


def serve_args(cfg: PipelineConfig, model_uri: str | None = None) -> ServeArgs:
    """The app's arguments from `cfg.serve`, field by field (the names match); only what the
    pipeline resolves (model, tracking server, default feedback sink) is filled in here."""
    shared = {name: getattr(cfg.serve, name) for name in ServeArgs.model_fields if hasattr(cfg.serve, name)}
    return ServeArgs(
        **{
            **shared,
            "model_uri": model_uri or cfg.serve_model_uri,
            "task": cfg.task,
            "tracking_uri": tracking_uri(cfg),
            "feedback_uri": feedback_location(cfg),
        }
    )


def feedback_location(cfg: PipelineConfig) -> str:
    """Where feedback goes: serve.feedback_uri, else shared storage when the run has it (a cluster's
    train.storage_path), else the local output directory."""
    if cfg.serve.feedback_uri:
        return cfg.serve.feedback_uri
    base = cfg.train.storage_path or str(cfg.output_path)
    return f"{base.rstrip('/')}/feedback"


def deploy(cfg: PipelineConfig, model_uri: str | None = None) -> str:
    """Deploy (or update) the app; returns its base URL once it answers."""
    from ray import serve

    serve.start(
        http_options={"host": cfg.serve.host, "port": cfg.serve.port},
        proxy_location=cfg.serve.proxy_location,
        # The controller's and proxies' INFO lines (routes, replicas added) only with --verbose.
        logging_config={"log_level": "INFO" if verbose() else "WARNING"},
    )
    serve.run(build_app(serve_args(cfg, model_uri)), name=APP_NAME, route_prefix="/")
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    wait_until_ok(f"{url}/healthz")  # the replica's health check: a real forward pass
    return url


def client_headers(cfg: PipelineConfig) -> dict[str, str]:
    """What this process sends to the app: the first configured key, when auth is on."""
    from raylane.serve.auth import load_keys

    keys = load_keys(cfg.serve.api_keys_env, cfg.serve.api_keys_file)
    return {"Authorization": f"Bearer {keys[0]}"} if keys else {}


def chat_http(url: str, messages: list[dict], headers: dict[str, str] | None = None, **options) -> dict:
    """One chat completion (causal_lm models), not streamed."""
    body = {"messages": messages, **options}
    response = requests.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=300)
    response.raise_for_status()
    return response.json()


def predict_http(
    url: str, items: list, top_k: int = 1, headers: dict[str, str] | None = None, field: str = "texts"
) -> dict:
    response = requests.post(f"{url}/predict", json={field: items, "top_k": top_k}, headers=headers, timeout=60)
    response.raise_for_status()
    return response.json()
