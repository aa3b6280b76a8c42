"""One Serve replica: the model (and the one replacing it on a hot swap), the limits, the
batching, the metrics and drift, the feedback sink. Its HTTP routes are bound in
`raylane.serve.app`; what a request holds and what an answer says come from the task."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import HTTPException
from ray import serve

from raylane.tasks import get_task
from raylane.tasks.base import RequestProblem


class Replica:
    def __init__(self, args):
        from ray.serve.context import _get_internal_replica_context

        from raylane.serve.auth import key_digests
        from raylane.serve.feedback import FeedbackSink, PredictionIds, load_secret
        from raylane.serve.metrics import replica_metrics
        from raylane.serve.swap import follow

        self.args = args
        # A replica's log is for requests and errors: no bars for the model it downloads at start
        # or on a hot swap (MLflow reads this variable at each download).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.task = get_task(args.task)
        key_digests(args.api_keys_env, args.api_keys_file)  # a named key source that holds none fails now
        self.ids = PredictionIds(
            load_secret(args.feedback_secret_env, args.feedback_secret_file) if args.feedback else None
        )
        self.sink = None
        if args.feedback:
            self.sink = FeedbackSink(
                args.feedback_uri,
                args.feedback_format,
                replica=_replica_id(),
                max_bytes=int(args.feedback_max_mb * 2**20),
                flush_s=args.feedback_flush_s,
            )
        self.tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        self.metrics = replica_metrics()
        self.in_replica = _get_internal_replica_context() is not None
        if self.in_replica:
            self._score_batch.set_max_batch_size(args.max_batch_size)
            self._score_batch.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self.canary = self.task.inputs.example()[self.task.inputs.column]
        self.loaded = self._load(args.model_uri)
        self.metrics.serving(self.loaded.version)
        self.follower = follow(
            args.model_uri, self.tracking_uri, self.loaded.version, args.poll_interval_s, self._swap_to
        )

    def _load(self, model_uri: str):
        from raylane.drift import DriftWindow, read_reference
        from raylane.predictor import Predictor
        from raylane.registry import resolve_model
        from raylane.serve.swap import Loaded

        resolved = resolve_model(model_uri, self.tracking_uri)
        predictor = Predictor(
            resolved.model_dir,
            quantize=self.args.quantize,
            prune_amount=self.args.prune_amount,
            threads=max(1, round(self.args.replica_cpus)),
        )
        if predictor.task.name != self.task.name:
            raise ValueError(f"{model_uri} is a {predictor.task.name} model; this deployment serves {self.task.name}")
        reference = read_reference(resolved.model_dir)
        drift = DriftWindow(reference, predictor.labels, self.args.drift_window) if reference else None
        return Loaded(predictor, resolved.name, resolved.version, time.time(), drift)

    def _swap_to(self, model_uri: str) -> None:
        new = self._load(model_uri)
        new.predictor.predict(self.canary)  # only a model that answers replaces the one serving
        self.loaded = new  # one reference assignment: a request sees the old model or the new, whole
        self.metrics.serving(new.version)

    def items(self, request) -> list:
        """The request's inputs within the deployment's limits, or a 4xx before any scoring."""
        try:
            return self.task.inputs.items(request, self.args)
        except RequestProblem as problem:
            raise HTTPException(problem.status, problem.detail) from None

    async def _score_many(self, requests: list[list]) -> list[tuple]:
        """Scores the inputs of several concurrent requests in one forward pass; each request gets
        back its own rows and the model that scored them (a swap may land between batches)."""
        loaded = self.loaded
        items = [item for request in requests for item in request]
        # On the event loop, blocking it, on purpose: requests arriving meanwhile wait in Ray's
        # queue and the next batch takes them all. In a worker thread the forward pass (Python
        # between kernels, holding the GIL) starved the loop that accepts requests, so batches
        # stayed at about one request and throughput at that of no batching (bench serve_batching).
        outputs, features = loaded.predictor.scores(items, raw=True)
        answers = loaded.predictor.answer(outputs)
        feature = self.task.inputs.drift_feature
        observations = [{**self.task.target.observation(a), feature: float(f)} for a, f in zip(answers, features)]
        self.metrics.observe_batch(observations, loaded.drift)
        self.metrics.serving(loaded.version)  # per batch too: a value set while the replica starts can be lost
        out, start = [], 0
        for request in requests:
            out.append((loaded, outputs[start : start + len(request)]))
            start += len(request)
        return out

    # Concurrent requests queue here and are scored together; size and wait are reset from the
    # config in __init__.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _score_batch(self, requests: list[list]) -> list[tuple]:
        return await self._score_many(requests)

    async def _score(self, items: list) -> tuple:
        if self.in_replica:
            return await self._score_batch(items)
        # Serve's local testing mode has no replica context, which @serve.batch needs (Ray 2.60).
        return (await self._score_many([items]))[0]

    async def predict(self, request) -> dict[str, Any]:
        loaded, outputs = await self._score(self.items(request))
        answers = loaded.predictor.answer(outputs, getattr(request, "top_k", 1))
        return {
            "predictions": [{**a, "prediction_id": self.ids.issue()} for a in answers],
            "model_name": loaded.name,
            "model_version": loaded.version,
        }

    async def predict_upload(self, blobs: list[bytes]) -> dict[str, Any]:
        try:
            request = self.task.inputs.upload_request(blobs)
        except RequestProblem as problem:
            raise HTTPException(problem.status, problem.detail) from None
        return await self.predict(request)

    def feedback(self, request) -> dict:
        """A labelled example for retraining, for a prediction this deployment made."""
        from raylane.pii import PII_KINDS, mask_pii
        from raylane.serve.feedback import QuotaExceeded

        if self.sink is None:
            raise HTTPException(404, "feedback is not enabled on this deployment (serve.feedback)")
        if not self.ids.valid(request.prediction_id):
            raise HTTPException(422, "prediction_id is not one this deployment issued")
        loaded = self.loaded
        target = self.task.target
        check = target.check_label(request.label)
        if check.reason or (target.has_label_set and not target.known(check.value, frozenset(loaded.predictor.labels))):
            raise HTTPException(
                422,
                f"label {request.label!r} is not one of {loaded.predictor.labels}"
                if target.has_label_set
                else f"label {request.label!r}: {check.detail}",
            )
        text = request.text if len(request.text) <= self.args.max_chars else request.text[: self.args.max_chars]
        record = {
            "text": mask_pii(text, PII_KINDS)[0],  # personal data never reaches the sink
            "label": request.label,
            "prediction_id": request.prediction_id,
            "model_name": loaded.name or "",
            "model_version": loaded.version or "",
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            self.sink.add(record)
        except QuotaExceeded:
            raise HTTPException(429, "this replica's feedback quota is used up (serve.feedback_max_mb)") from None
        return {"accepted": True, "prediction_id": request.prediction_id}

    def healthz(self) -> dict:
        # A real forward pass: a replica whose model is broken must not look healthy. Open to
        # load balancers and probes, which carry no key.
        loaded = self.loaded
        loaded.predictor.predict(self.canary)
        return {"status": "ok", "model_version": loaded.version}

    def model(self) -> dict:
        from raylane.compress import describe

        loaded = self.loaded
        drift = loaded.drift
        return {
            "name": loaded.name,
            "version": loaded.version,
            "uri": self.args.model_uri,
            "task": self.task.name,
            "labels": loaded.predictor.labels,
            "loaded_at": loaded.loaded_at,
            "follows": self.args.model_uri if self.follower else None,
            "variant": describe(self.args.quantize, self.args.prune_amount),
            "drift": {"window": len(drift.window), "psi": drift.scores()} if drift else None,
        }

    def check_health(self) -> None:
        self.loaded.predictor.predict(self.canary)

    def __del__(self):
        if getattr(self, "follower", None):
            self.follower.stop()
        if getattr(self, "sink", None):
            self.sink.close()  # what is buffered is written before the replica goes


def _replica_id() -> str:
    """This replica's name, for its partition of the feedback sink."""
    from ray.serve.context import _get_internal_replica_context

    context = _get_internal_replica_context()
    return context.replica_id.unique_id if context is not None else "local"
