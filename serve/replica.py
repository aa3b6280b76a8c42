"""The life cycle every served model shares, scoring or chat: load the model a URI names, check it
answers, follow a registry alias and swap a new version in, batch concurrent requests, and tell
Serve and load balancers whether it is healthy. `raylane.serve.scoring` and `raylane.serve.chat`
add what their requests and answers are."""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from raylane.serve.swap import Loaded

if TYPE_CHECKING:
    from raylane.generate import Generator
    from raylane.predictor import Predictor


class Replica(ABC):
    """Subclasses give the model's canary (`_canary`) and the batched work (`_many`, behind a
    `@serve.batch` method named `_batch`)."""

    def __init__(self, args):
        from ray.serve.context import _get_internal_replica_context

        from raylane.serve.auth import key_digests
        from raylane.serve.metrics import replica_metrics
        from raylane.serve.swap import follow

        self.args = args
        # A replica's log is for requests and errors: no bars for the model it downloads at start
        # or on a hot swap (MLflow reads this variable at each download).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        key_digests(args.api_keys_env, args.api_keys_file)  # a named key source that holds none fails now
        self.tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        self.metrics = replica_metrics()
        self.in_replica = _get_internal_replica_context() is not None
        if self.in_replica:
            self._batch.set_max_batch_size(args.max_batch_size)
            self._batch.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self.loaded = self._load(args.model_uri)
        self.metrics.serving(self.loaded.version)
        self.follower = follow(
            args.model_uri, self.tracking_uri, self.loaded.version, args.poll_interval_s, self._swap_to
        )

    def _load(self, model_uri: str) -> Loaded:
        import torch

        from raylane.loader import load_model
        from raylane.registry import resolve_model

        resolved = resolve_model(model_uri, self.tracking_uri)
        model = load_model(
            resolved.model_dir,
            serves=self.args.task,
            device="cuda" if self.args.replica_gpus and torch.cuda.is_available() else "cpu",
            threads=max(1, round(self.args.replica_cpus)),
            **self._variant(),
        )
        return Loaded(model, resolved.name, resolved.version, time.time(), self._drift(resolved.model_dir, model))

    def _variant(self) -> dict:
        """The compressed variant the model is loaded as (none by default)."""
        return {}

    def _drift(self, model_dir: str, model):
        """The drift window over this model's answers, if it watches any."""
        return None

    def _swap_to(self, model_uri: str) -> None:
        new = self._load(model_uri)
        self._canary(new.model)  # only a model that answers replaces the one serving
        self.loaded = new  # one reference assignment: a request sees the old model or the new, whole
        self.metrics.serving(new.version)

    @abstractmethod
    def _canary(self, model: Predictor | Generator) -> None:
        """A real answer from `model`: a replica whose model is broken must not look healthy."""

    @abstractmethod
    async def _many(self, items: list) -> list:
        """The work of several concurrent requests at once, one result per item."""

    async def _batched(self, item):
        """`item`'s result, computed with those of the requests queued beside it."""
        if self.in_replica:
            return await self._batch(item)
        # Serve's local testing mode has no replica context, which @serve.batch needs (Ray 2.60).
        return (await self._many([item]))[0]

    def healthz(self) -> dict:
        # A real answer: a replica whose model is broken must not look healthy. Open to load
        # balancers and probes, which carry no key.
        loaded = self.loaded
        self._canary(loaded.model)
        return {"status": "ok", "model_version": loaded.version}

    def check_health(self) -> None:
        self._canary(self.loaded.model)

    def __del__(self):
        if getattr(self, "follower", None):
            self.follower.stop()
