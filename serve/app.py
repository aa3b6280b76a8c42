"""The Ray Serve application. Built by `build_app` from a model URI (the registry's champion by
default) and typed arguments (`ServeArgs`), by the task's engine: a scoring app
(`raylane.serve.scoring`: POST /predict) or a chat app (`raylane.serve.chat`: OpenAI-style
completions). It never imports training code, only the core's model loaders.

Run it with `python -m raylane serve`, `serve run raylane.serve.app:build_app model_uri=...`, or on a
cluster with `serve deploy configs/serve.yaml`.
"""

# No `from __future__ import annotations`: Serve reads the builder's argument type to validate
# the `args` of a `serve deploy` config.
from ray import serve

from raylane.config import ConfigError
from raylane.config.schema import open_host_problem
from raylane.serve.args import ServeArgs
from raylane.serve.chat import build_chat_app
from raylane.serve.scoring import build_scoring_app
from raylane.tasks import get_task

APPS = {"scoring": build_scoring_app, "generating": build_chat_app}


def build_app(args: ServeArgs) -> serve.Application:
    refuse_open_proxies(args)
    return APPS[get_task(args.task).engine.name](args)


def refuse_open_proxies(args: ServeArgs) -> None:
    """However Serve was started (raylane's deploy, `serve run`, `serve deploy` of a config), its
    proxies on a host other than loopback need API keys unless `allow_unauthenticated` says
    otherwise: the same rule as the pipeline config's serve section, on Serve's own http_options."""
    host = _proxy_host()
    # A named key source counts, as in the config: a replica whose source holds no key fails at start.
    has_keys = bool(args.api_keys_env or args.api_keys_file)
    problem = open_host_problem(host, has_keys, args.allow_unauthenticated) if host else ""
    if problem:
        raise ConfigError("serve.allow_unauthenticated", problem)


def _proxy_host() -> str | None:
    """Where this cluster's Serve proxies listen; None when no Serve runs (local testing mode)."""
    import ray
    from ray.serve.context import _get_global_client

    if not ray.is_initialized():
        return None  # asking for the controller would start a Ray of its own
    client = _get_global_client(raise_if_no_controller_running=False)
    return client.http_config.host if client else None


__all__ = ["ServeArgs", "build_app"]
