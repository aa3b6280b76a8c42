"""The life cycle every served model shares, scoring or chat: load the model a URI names, check it
answers, follow a registry alias and swap a new version in, batch concurrent requests, and tell
Serve and load balancers whether it is healthy. `raylane.serve.scoring` and `raylane.serve.chat`
add what their requests and answers are."""

from __future__ import annotations

import os
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raylane.openmp import release_thread_pool
from raylane.serve.swap import Loaded, LoadFailed

if TYPE_CHECKING:
    from raylane.generate import Generator
    from raylane.predictor import Predictor

# Batches failed in a row before the replica calls itself unhealthy (and Serve restarts it): one
# bad batch must not cost everything in flight; a model that fails every batch should.
FAILED_IN_A_ROW = 3


@dataclass
class Health:
    """What /healthz and Serve's `check_health` read: state the work itself keeps, never a forward
    pass or generation of their own. A probe that generated let anyone without a key load the
    replica, and on a busy replica it waited behind the batch and timed out, so Serve restarted a
    replica that was working. The model answered its canary at load (and each swapped-in one at
    its swap); from then on, batches that fail in a row are what counts."""

    failed_in_a_row: int = 0
    last_error: str = ""
    last_success: float = 0.0

    def succeeded(self) -> None:
        self.failed_in_a_row, self.last_success = 0, time.time()

    def failed(self, error: BaseException) -> None:
        self.failed_in_a_row += 1
        self.last_error = f"{type(error).__name__}: {error}"[:300]

    @property
    def ok(self) -> bool:
        return self.failed_in_a_row < FAILED_IN_A_ROW


def public_uri(model_uri: str) -> str:
    """The model URI as GET /model shows it: a registry or run URI as is; a local directory by its
    name only, as the server's file system is nobody's business."""
    if model_uri.startswith(("models:/", "runs:/")):
        return model_uri
    return os.path.basename(os.path.normpath(model_uri))


class Replica(ABC):
    """Subclasses give the model's canary (`_canary`) and the batched work (`_many`, behind a
    `@serve.batch` method named `_batch`)."""

    def __init__(self, args, controller=None):
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
        # Registered versions are downloaded once per node, each into its own directory, and
        # pruned after a swap (a fresh temporary copy per swap once filled the disk).
        self.model_cache = os.environ.get("RAYLANE_MODEL_CACHE") or os.path.join(
            tempfile.gettempdir(), "raylane-models"
        )
        self.metrics = replica_metrics()
        self.in_replica = _get_internal_replica_context() is not None
        if self.in_replica:
            self._batch.set_max_batch_size(args.max_batch_size)
            self._batch.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self.loaded = self._load(args.model_uri)
        self._canary(self.loaded.model)  # a model that cannot answer fails the replica's start
        release_thread_pool()  # the requests may run in another thread (raylane.openmp)
        self.health = Health(last_success=time.time())
        self.metrics.serving(self.loaded.version)
        self.follower = follow(
            args.model_uri, self.tracking_uri, self.loaded.version, args.poll_interval_s, self._swap_to
        )
        # Under serve.rollout: canary, the app's rollout controller says which challenger takes
        # what share of this replica's requests (raylane.serve.canary).
        self.lane = None
        if controller is not None and self.follower is not None:
            from raylane.serve.canary import CanaryLane

            self.lane = CanaryLane(
                controller, self._load_checked, self._adopt, self.follower.name, args.canary.tick_s, self.metrics
            )

    def _load(self, model_uri: str) -> Loaded:
        from raylane.registry import resolve_model

        resolved = resolve_model(model_uri, self.tracking_uri, self.model_cache)
        return self._load_resolved(resolved)

    def _load_resolved(self, resolved) -> Loaded:
        import torch

        from raylane.loader import load_model

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
        """Downloads `model_uri` (a failure there is the next poll's to retry), loads it and has it
        answer its canary (a failure there is `LoadFailed`: the follower does not try it again
        until the alias moves), swaps it in, and prunes cached versions but the new and the old."""
        self._adopt(self._load_checked(model_uri))

    def _load_checked(self, model_uri: str) -> Loaded:
        """`model_uri` downloaded, loaded and answering its canary; `LoadFailed` if it will not."""
        from raylane.registry import resolve_model

        resolved = resolve_model(model_uri, self.tracking_uri, self.model_cache)
        try:
            new = self._load_resolved(resolved)
            self._canary(new.model)  # only a model that answers replaces the one serving
        except Exception as err:
            raise LoadFailed(f"{model_uri}: {type(err).__name__}: {err}") from err
        finally:
            release_thread_pool()  # this thread only loads: its OpenMP team would slow the serving thread's
        return new

    def _adopt(self, new: Loaded) -> None:
        """`new` serves from now on (a swap, or a canary's challenger promoted)."""
        from raylane.registry import prune_cache

        old, self.loaded = self.loaded, new  # one reference assignment: a request sees the old model or the new, whole
        self.metrics.serving(new.version)
        if self.follower is not None:
            self.follower.current = self.follower.pointed = new.version
        if new.name:
            prune_cache(self.model_cache, self.tracking_uri, new.name, {str(new.version), str(old.version)})

    def pick(self, client: str | None = None) -> tuple[Loaded, str]:
        """The model this request is answered by: the champion, or the challenger of a canary
        rollout for its share of requests (sticky per `client` where asked); and the rollout
        step it was routed in, which its outcome counts for."""
        return self.lane.pick(self.loaded, client) if self.lane is not None else (self.loaded, "")

    def record(self, loaded: Loaded, step: str, ok: bool, seconds: float) -> None:
        """A request's outcome per version: Prometheus series (the dashboard's per-version panels),
        and in a canary rollout the evidence its step is judged on."""
        self.metrics.observe_version(str(loaded.version), ok, seconds)
        if self.lane is not None and step:
            self.lane.record(loaded, step, ok, seconds)

    def record_feedback(self, version: str, step: str, right: bool) -> None:
        """Feedback on an answer of `version` (routed in `step`): the live accuracy series, and a
        canary rollout's evidence."""
        self.metrics.observe_feedback(version, right)
        if self.lane is not None and step:
            self.lane.record_feedback(version, step, right)

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
        return (await self._many_watched([item]))[0]

    async def _many_watched(self, items: list) -> list:
        """`_many`, its outcome kept for the health check (what the `_batch` methods call)."""
        try:
            out = await self._many(items)
        except Exception as err:
            self.health.failed(err)
            raise
        self.health.succeeded()
        return out

    def healthz(self) -> dict:
        """Open to load balancers and probes, which carry no key; cheap, as it reads `self.health`."""
        from fastapi import HTTPException

        loaded, health = self.loaded, self.health
        if not health.ok:  # the error itself goes to check_health and the log, not to anyone who asks
            raise HTTPException(503, f"unhealthy: the last {health.failed_in_a_row} batches failed")
        return {"status": "ok", "model_version": loaded.version, "last_success": health.last_success}

    def check_health(self) -> None:
        health = self.health
        if not health.ok:
            raise RuntimeError(f"the last {health.failed_in_a_row} batches failed: {health.last_error}")

    def __del__(self):
        if getattr(self, "follower", None):
            self.follower.stop()
        if getattr(self, "lane", None):
            self.lane.stop()
