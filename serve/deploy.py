"""Deploying the app from a pipeline config, and talking to it over HTTP."""

from __future__ import annotations

import requests

from raylane.config import PipelineConfig
from raylane.http import wait_until_ok
from raylane.tracking import tracking_uri
from serve.app import ServeArgs, build_app

APP_NAME = "raylane"


def serve_args(cfg: PipelineConfig, model_uri: str | None = None) -> ServeArgs:
    return ServeArgs(
        model_uri=model_uri or cfg.serve_model_uri,
        tracking_uri=tracking_uri(cfg),
        max_texts=cfg.serve.max_texts,
        num_replicas=cfg.serve.num_replicas,
    )


def deploy(cfg: PipelineConfig, model_uri: str | None = None) -> str:
    """Deploy (or update) the app; returns its base URL once it answers."""
    from ray import serve

    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port},
                proxy_location=cfg.serve.proxy_location)
    serve.run(build_app(serve_args(cfg, model_uri)), name=APP_NAME, route_prefix="/")
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    wait_until_ok(f"{url}/healthz")  # the replica's health check: a real forward pass
    return url


def predict_http(url: str, texts: list[str], top_k: int = 1) -> dict:
    response = requests.post(f"{url}/predict", json={"texts": texts, "top_k": top_k}, timeout=60)
    response.raise_for_status()
    return response.json()
