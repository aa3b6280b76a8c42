"""The scoring app, for classifiers, regression and images: POST /predict (JSON or uploaded
files), POST /feedback, GET /model, /healthz. A replica scores the inputs of concurrent requests
in one forward pass, watches drift over its answers, and takes labelled feedback for retraining;
what a request holds and what an answer says come from the task."""

# No `from __future__ import annotations`: FastAPI must see the real request types on the
# ingress methods, or a JSON body is mistaken for query parameters (422).
import time
from collections import OrderedDict
from typing import Any

from fastapi import File, HTTPException, UploadFile
from pydantic import BaseModel, Field, create_model
from ray import serve

from raylane.serve.args import ServeArgs, deployment_options
from raylane.serve.auth import current_client
from raylane.serve.canary import bind_app
from raylane.serve.guard import guarded_api
from raylane.serve.replica import Replica, public_uri
from raylane.tasks import Task, get_task
from raylane.tasks.base import RequestProblem
from raylane.tasks.text import TEXT_CEILING, StrictBody, TextsRequest

DEPLOYMENT = "Scorer"
NAME_CEILING = 200
# Answers kept for feedback to be matched with (about 1 KB each). Feedback is matched by the
# replica that made the prediction: all of it with one replica, about 1/N of it with N, which is
# still an unbiased sample of each version's answers.
SAID_KEPT = 20_000


class Recent:
    """The last `size` values put, by key; a key is taken once."""

    def __init__(self, size: int):
        self.size, self.values = size, OrderedDict()

    def remember(self, key: str, value) -> None:
        self.values[key] = value
        if len(self.values) > self.size:
            self.values.popitem(last=False)

    def take(self, key: str):
        return self.values.pop(key, None)


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


class ScoringReplica(Replica):
    """One scoring replica: the model (and the one replacing it on a hot swap), the limits, the
    batching, the metrics and drift, the feedback sink."""

    def __init__(self, args, controller=None):
        from raylane.serve.feedback import FeedbackSink, PredictionIds, load_secret

        self.task = get_task(args.task)
        self.ids = PredictionIds(
            load_secret(args.feedback_secret_env, args.feedback_secret_file) if args.feedback else None,
            ttl_s=args.feedback_ttl_s,
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
        # What this replica answered, by prediction id, for the live accuracy that feedback gives.
        self.said = Recent(SAID_KEPT)
        self.example = self.task.inputs.example()[self.task.inputs.column]
        super().__init__(args, controller)

    def _variant(self) -> dict:
        return {"quantize": self.args.quantize, "prune_amount": self.args.prune_amount}

    def _drift(self, model_dir: str, model):
        from raylane.drift import DriftWindow, read_reference

        reference = read_reference(model_dir)
        return DriftWindow(reference, model.labels, self.args.drift_window) if reference else None

    def _canary(self, model) -> None:
        model.predict(self.example)

    def items(self, request) -> list:
        """The request's inputs within the deployment's limits, or a 4xx before any scoring."""
        try:
            return self.task.inputs.items(request, self.args)
        except RequestProblem as problem:
            raise HTTPException(problem.status, problem.detail) from None

    async def _many(self, requests: list[tuple]) -> list:
        """Scores the inputs of several concurrent requests, one forward pass per model they were
        routed to (the champion, or a canary's challenger); each request gets back its own rows.
        A challenger that fails answers its requests with the error (the caller falls back to the
        champion) and leaves the champion's requests in the batch, and the replica's health, be."""
        groups: dict[int, list[int]] = {}
        for i, (loaded, _) in enumerate(requests):
            groups.setdefault(id(loaded), []).append(i)
        out: list = [None] * len(requests)
        for indices in groups.values():
            loaded = requests[indices[0]][0]
            try:
                answered = self._score(loaded, [requests[i][1] for i in indices])
            except Exception as err:
                if loaded is self.loaded:
                    raise
                answered = [err] * len(indices)
            for i, answer in zip(indices, answered):
                out[i] = answer
        return out

    def _score(self, loaded, requests: list[list]) -> list[tuple]:
        items = [item for request in requests for item in request]
        # On the event loop, blocking it, on purpose: requests arriving meanwhile wait in Ray's
        # queue and the next batch takes them all. In a worker thread the forward pass (Python
        # between kernels, holding the GIL) starved the loop that accepts requests, so batches
        # stayed at about one request and throughput at that of no batching (bench serve_batching).
        outputs, features = loaded.model.scores(items, raw=True)
        answers = loaded.model.answer(outputs)
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
    # config in Replica.__init__.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _batch(self, requests: list[tuple]) -> list:
        return await self._many_watched(requests)

    async def predict(self, request) -> dict[str, Any]:
        items = self.items(request)
        loaded, step = self.pick(current_client())
        scored = await self._scored_by(loaded, step, items)
        if isinstance(scored, Exception):  # the canary's challenger failed: counted, and the champion answers
            scored = await self._scored_by(self.loaded, step, items)
            if isinstance(scored, Exception):
                raise scored
        loaded, outputs = scored
        answers = loaded.model.answer(outputs, getattr(request, "top_k", 1))
        # Each id is bound to the item as scored (a text as truncated), which feedback quotes.
        ids = [self.ids.issue(item) for item in items]
        if self.sink is not None:
            for prediction_id, answer in zip(ids, answers):
                self.said.remember(prediction_id, (str(loaded.version), step, answer))
        return {
            "predictions": [{**a, "prediction_id": i} for a, i in zip(answers, ids)],
            "model_name": loaded.name,
            "model_version": loaded.version,
        }

    async def _scored_by(self, loaded, step: str, items: list):
        """`items` scored by `loaded` (in a batch), its outcome recorded for that version."""
        started = time.perf_counter()
        try:
            scored = await self._batched((loaded, items))
        except Exception:
            self.record(loaded, step, False, time.perf_counter() - started)
            raise
        self.record(loaded, step, not isinstance(scored, Exception), time.perf_counter() - started)
        return scored

    async def predict_upload(self, blobs: list[bytes]) -> dict[str, Any]:
        try:
            request = self.task.inputs.upload_request(blobs)
        except RequestProblem as problem:
            raise HTTPException(problem.status, problem.detail) from None
        return await self.predict(request)

    def feedback(self, request) -> dict:
        """A labelled example for retraining, for a prediction this deployment made."""
        from raylane.pii import PII_KINDS, mask_pii
        from raylane.serve.feedback import AlreadyUsed, QuotaExceeded

        if self.sink is None:
            raise HTTPException(404, "feedback is not enabled on this deployment (serve.feedback)")
        text = request.text if len(request.text) <= self.args.max_chars else request.text[: self.args.max_chars]
        problem = self.ids.problem(request.prediction_id, text)
        if problem:
            raise HTTPException(422, problem)
        loaded = self.loaded
        check = self.task.target.check_label(request.label)
        if check.reason:
            raise HTTPException(422, f"label {request.label!r}: {check.detail}")
        if not self.task.target.known(check.value, frozenset(loaded.model.labels)):
            raise HTTPException(422, f"label {request.label!r} is not one of {loaded.model.labels}")
        record = {
            "text": mask_pii(text, PII_KINDS)[0],  # personal data never reaches the sink
            "label": request.label,
            "prediction_id": request.prediction_id,
            "model_name": loaded.name or "",
            "model_version": loaded.version or "",
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            self.sink.add(record, request.prediction_id)
        except AlreadyUsed:
            raise HTTPException(409, "prediction_id has had its feedback already: each is taken once") from None
        except QuotaExceeded:
            raise HTTPException(429, "the feedback sink's quota is used up (serve.feedback_max_mb)") from None
        said = self.said.take(request.prediction_id)
        if said is not None:  # this replica made the prediction: was it right?
            version, step, answer = said
            right = self.task.target.agrees(answer, check.value)
            if right is not None:
                self.record_feedback(version, step, right)
        return {"accepted": True, "prediction_id": request.prediction_id}

    def model(self) -> dict:
        from raylane.compress import describe

        loaded = self.loaded
        drift = loaded.drift
        return {
            "name": loaded.name,
            "version": loaded.version,
            "uri": public_uri(self.args.model_uri),
            "task": self.task.name,
            "labels": loaded.model.labels,
            "loaded_at": loaded.loaded_at,
            "follows": self.args.model_uri if self.follower else None,
            "variant": describe(self.args.quantize, self.args.prune_amount),
            "drift": {"window": len(drift.window), "psi": drift.scores()} if drift else None,
        }

    def __del__(self):
        super().__del__()
        if getattr(self, "sink", None):
            self.sink.close()  # what is buffered is written before the replica goes


def _replica_id() -> str:
    """This replica's name, for its partition of the feedback sink."""
    from ray.serve.context import _get_internal_replica_context

    context = _get_internal_replica_context()
    return context.replica_id.unique_id if context is not None else "local"


def _scoring_deployment(args: ServeArgs):
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

    @serve.deployment(name=DEPLOYMENT, health_check_period_s=10, health_check_timeout_s=30)
    @serve.ingress(api)
    class Scorer(ScoringReplica):
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

    return Scorer


def build_scoring_app(args: ServeArgs) -> serve.Application:
    return bind_app(_scoring_deployment(args).options(**deployment_options(args)), args)
