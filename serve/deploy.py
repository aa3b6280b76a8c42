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
        max_chars=cfg.serve.max_chars,
        on_too_long=cfg.serve.on_too_long,
        num_replicas=cfg.serve.num_replicas,
        max_replicas=cfg.serve.max_replicas,
        target_ongoing_requests=cfg.serve.target_ongoing_requests,
        upscale_delay_s=cfg.serve.upscale_delay_s,
        downscale_delay_s=cfg.serve.downscale_delay_s,
        replica_cpus=cfg.serve.replica_cpus,
        replica_gpus=cfg.serve.replica_gpus,
        max_batch_size=cfg.serve.max_batch_size,
        batch_wait_timeout_s=cfg.serve.batch_wait_timeout_s,
        max_ongoing_requests=cfg.serve.max_ongoing_requests,
        quantize=cfg.serve.quantize,
        prune_amount=cfg.serve.prune_amount,
        drift_window=cfg.serve.drift_window,
        access_log=cfg.serve.access_log,
        api_keys_env=cfg.serve.api_keys_env,
        api_keys_file=cfg.serve.api_keys_file,
        feedback_uri=cfg.serve.feedback_uri or str(cfg.output_path / "feedback"),
        feedback_format=cfg.serve.feedback_format,
        poll_interval_s=cfg.serve.poll_interval_s,
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


def client_headers(cfg: PipelineConfig) -> dict[str, str]:
    """What this process sends to the app: the first configured key, when auth is on."""
    from serve.auth import load_keys

    keys = load_keys(cfg.serve.api_keys_env, cfg.serve.api_keys_file)
    return {"Authorization": f"Bearer {keys[0]}"} if keys else {}


def predict_http(url: str, texts: list[str], top_k: int = 1, headers: dict[str, str] | None = None) -> dict:
    response = requests.post(f"{url}/predict", json={"texts": texts, "top_k": top_k}, headers=headers, timeout=60)
    response.raise_for_status()
    return response.json()
