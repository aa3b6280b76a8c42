"""The chat app, for a generating task (causal_lm): OpenAI-style POST /v1/chat/completions and POST
/v1/completions over an instruction-tuned causal LM, behind the same door as the scoring app
(Bearer keys, body size, request counts: `raylane.serve.guard.guarded_api`), with the same replica
life cycle (`raylane.serve.replica`: load, hot swap, health) and deployment options, and a cheap
/healthz (it reads the replica's health; no generation).

A request is refused (4xx) before any generation: its schema (`raylane.serve.chat_schema`), then
its chat template (one that refuses the conversation is a 422 naming why), its prompt's length in
tokens after the template (serve.max_prompt_tokens) and the model's context. Concurrent
non-streaming requests are generated together (`@serve.batch`); a streaming one runs alone, its
tokens sent as server-sent events as they are generated, and ends with an error event and [DONE]
if its generation fails.
"""

# No `from __future__ import annotations`: FastAPI must see the real request types on the
# ingress methods (see raylane.serve.scoring).
import asyncio
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import StreamingResponse
from ray import serve

from raylane.chat_template import TemplateRefused
from raylane.continuous import ContinuousBatcher, check_supported
from raylane.continuous import Request as Generating
from raylane.serve.args import ServeArgs, deployment_options
from raylane.serve.auth import current_client
from raylane.serve.canary import bind_app
from raylane.serve.chat_schema import ChatCompletion, TextCompletion, request_models
from raylane.serve.guard import failed_midway, guarded_api
from raylane.serve.replica import Replica, public_uri

logger = logging.getLogger("ray.serve")
DEPLOYMENT = "Chat"
SSE = "text/event-stream"


@dataclass(frozen=True)
class Job:
    """One request, checked and tokenized: what its generation needs."""

    loaded: object  # raylane.serve.swap.Loaded whose model is a raylane.generate.Generator
    prompt: list[int]
    sampling: object  # raylane.generate.Sampling
    arrived: float  # time.perf_counter() when the replica took the request
    step: str = ""  # the canary rollout step it was routed in, if one runs


class ChatReplica(Replica):
    def __init__(self, args, controller=None):
        from raylane.serve.metrics import generation_metrics

        self.generation = generation_metrics()
        # One thread generates, batches and streams in the order they come. Off the event loop,
        # which stays free to take requests, send streamed chunks and answer health checks (on the
        # loop, a batch of 8 x 512 tokens blocked it for minutes and Serve restarted a working
        # replica); one at a time, as two generate loops side by side on the same cores only make
        # both slower. A stream's wait for its turn shows in its time to first token.
        # With serve.scheduler: continuous, a ContinuousBatcher's own thread does this instead (one
        # per model served: a hot swap starts the new model's and stops the old one's).
        self.generating = ThreadPoolExecutor(1, thread_name_prefix="raylane-generate")
        self.batchers: dict[int, ContinuousBatcher] = {}
        super().__init__(args, controller)

    def _canary(self, model) -> None:
        model.canary()
        if self.args.scheduler == "continuous":
            check_supported(model)  # a model the batcher cannot serve fails here, not on a request

    def job(self, request, chat: bool, client: str | None = None) -> Job:
        """The request tokenized and within the limits, or a 4xx before any generation."""
        from raylane.generate import Sampling

        loaded, step = self.pick(client)  # the champion, or a canary's challenger for its share
        generator = loaded.model
        if chat:
            try:
                prompt = generator.chat_prompt([m.model_dump() for m in request.messages])
            except TemplateRefused as refused:
                raise HTTPException(422, str(refused)) from None
        else:
            prompt = generator.text_prompt(request.prompt)
        if len(prompt) > self.args.max_prompt_tokens:
            raise HTTPException(
                413,
                f"the prompt is {len(prompt)} tokens (chat template included), over this deployment's limit of "
                f"{self.args.max_prompt_tokens} (serve.max_prompt_tokens)",
            )
        defaults = generator.defaults
        sampling = Sampling(
            request.max_tokens or min(defaults.max_new_tokens, self.args.max_new_tokens_ceiling),
            defaults.temperature if request.temperature is None else request.temperature,
            defaults.top_p if request.top_p is None else request.top_p,
            defaults.stop if request.stop is None else tuple(request.stop),
            request.seed,
        )
        context = getattr(generator.model.config, "max_position_embeddings", None)
        if context and len(prompt) + sampling.max_new_tokens > context:
            raise HTTPException(
                422,
                f"the prompt's {len(prompt)} tokens plus max_tokens {sampling.max_new_tokens} are over the model's "
                f"context of {context} tokens",
            )
        return Job(loaded, prompt, sampling, time.perf_counter(), step)

    async def respond(self, request, chat: bool, scope: dict):
        job = self.job(request, chat, current_client())
        if request.stream:
            return StreamingResponse(self._events(job, request.model, chat, scope), media_type=SSE)
        try:
            generation = await (self._continuous(job) if self.args.scheduler == "continuous" else self._batched(job))
        except Exception:
            self.record(job.loaded, job.step, False, time.perf_counter() - job.arrived)
            raise
        self.record(job.loaded, job.step, True, time.perf_counter() - job.arrived)
        head = self._head(job, request.model, chat, chunk=False)
        choice = {"index": 0, "finish_reason": generation.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": generation.text}
        else:
            choice["text"] = generation.text
        usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        }
        return {**head, "choices": [choice], "usage": usage}

    def _batcher_for(self, loaded) -> ContinuousBatcher:
        """The continuous batcher of `loaded`'s model, started on first use. Starting one stops the
        others (a swapped-out model's), which answer the rows they hold and end."""
        key = id(loaded.model)  # the batcher holds the model, so the id is not reused while it runs
        batcher = self.batchers.get(key)
        if batcher is None:
            for old in self.batchers.values():
                old.stop()
            batcher = ContinuousBatcher(loaded.model, self.args.max_batch_size).start()
            self.batchers = {key: batcher}
        return batcher

    def _submit(self, job: Job, on_token=None, cancelled: threading.Event | None = None) -> tuple:
        """`job` into its model's continuous batch: (a future of its Generation, its Request)."""
        loop = asyncio.get_running_loop()
        answered = loop.create_future()

        def on_done(outcome) -> None:
            loop.call_soon_threadsafe(_settle, answered, outcome)

        request = Generating(job.prompt, job.sampling, on_done, on_token, cancelled)
        self._batcher_for(job.loaded).submit(request)
        return answered, request

    async def _continuous(self, job: Job):
        answered, request = self._submit(job)
        try:
            generation = await answered
        except Exception as err:
            self.health.failed(err)
            raise
        self.health.succeeded()
        done = time.perf_counter()
        reason = [generation.finish_reason]
        self.generation.observe_generate(
            request.peak_rows, generation.completion_tokens, done - request.joined_at, reason
        )
        self.generation.observe_waits(request.joined_at - job.arrived, request.first_token_at - job.arrived, False)
        return generation

    # Concurrent requests queue here and are generated together; size and wait are reset from the
    # config in Replica.__init__. Requests that arrive while a batch generates (in the generation
    # thread) queue for the next one.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batch(self, jobs: list[Job]) -> list:
        return await self._many_watched(jobs)

    async def _many(self, jobs: list[Job]) -> list:
        return await asyncio.get_running_loop().run_in_executor(self.generating, self._generate_all, jobs)

    def _generate_all(self, jobs: list[Job]) -> list:
        """The jobs' generations (in the generation thread), one `generate` call per model they
        were taken for (a hot swap between two requests may leave a batch holding both).

        Within a call, every row has its own max_tokens, stop strings, temperature, top_p and seed
        (`raylane.generate`): the call runs until the longest is done. The alternative, a call
        per distinct setting, would split a batch of clients that each pick their own settings into
        batches of one; finished rows costing a padded slot for the rest of the call is the
        cheaper price."""
        groups: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(id(job.loaded), []).append(i)
        out: list = [None] * len(jobs)
        for members in groups.values():
            group = [jobs[i] for i in members]
            for i, generation in zip(members, self._generate_group(group)):
                out[i] = generation
        return out

    def _generate_group(self, jobs: list[Job]) -> list:
        first: list[float] = []
        started = time.perf_counter()
        generations = jobs[0].loaded.model.generate(
            [job.prompt for job in jobs],
            [job.sampling for job in jobs],
            on_step=lambda _: first or first.append(time.perf_counter()),
        )
        seconds = time.perf_counter() - started
        tokens = sum(g.completion_tokens for g in generations)
        self.generation.observe_generate(len(jobs), tokens, seconds, [g.finish_reason for g in generations])
        for job in jobs:
            self.generation.observe_waits(started - job.arrived, (first[0] if first else started) - job.arrived, False)
        return generations

    async def _events(self, job: Job, model: str | None, chat: bool, scope: dict):
        """`_chunks`, and where the generation fails after the 200 went out, an error event and
        [DONE] (a client's parser ends cleanly and says why), the request counted as failed (the
        guard reads `scope`) and the failure kept for the health check."""
        import json

        try:
            async for chunk in self._chunks(job, model, chat):
                yield chunk
        except Exception as err:
            logger.exception("a stream's generation failed; the stream ends with an error event")
            self.health.failed(err)
            failed_midway(scope)
            error = {"message": "generation failed; the answer is incomplete", "type": "server_error", "code": None}
            yield f"data: {json.dumps({'error': error})}\n\n"
            yield "data: [DONE]\n\n"
            self.record(job.loaded, job.step, False, time.perf_counter() - job.arrived)
        else:
            self.health.succeeded()
            self.record(job.loaded, job.step, True, time.perf_counter() - job.arrived)

    async def _chunks(self, job: Job, model: str | None, chat: bool):
        """Server-sent events: a chunk per piece of text as tokens are generated (the first
        carrying the role, for chat), a last one with the finish reason and usage, then [DONE].
        Each piece is cut from the same text the non-streamed answer gives (`Generator.text_of`),
        less a tail that could still become a stop string, so the pieces add up to that answer."""
        from raylane.generate import held_back

        loop = asyncio.get_running_loop()
        steps: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        generator, sampling = job.loaded.model, job.sampling
        head = self._head(job, model, chat, chunk=True)

        def event(piece: str = "", finish_reason: str | None = None, role: bool = False, **extra) -> str:
            import json

            if chat:
                delta = {"role": "assistant", "content": ""} if role else {"content": piece} if piece else {}
                choice = {"index": 0, "delta": delta}
            else:
                choice = {"index": 0, "text": piece}
            return f"data: {json.dumps({**head, 'choices': [{**choice, 'finish_reason': finish_reason}], **extra})}\n\n"

        started: list[float] = []

        def generate():
            started.append(time.perf_counter())
            return generator.stream(
                job.prompt, sampling, lambda ids: loop.call_soon_threadsafe(steps.put_nowait, ids.tolist()), cancelled
            )

        try:
            if self.args.scheduler == "continuous":
                running, request = self._submit(
                    job, lambda t: loop.call_soon_threadsafe(steps.put_nowait, [t]), cancelled
                )
                started.append(0.0)  # replaced by its join time once it has one
            else:
                running, request = loop.run_in_executor(self.generating, generate), None
            running.add_done_callback(lambda _: steps.put_nowait(None))
            if chat:
                yield event(role=True)
            tokens: list[int] = []
            sent = ""
            while (ids := await steps.get()) is not None:
                if not tokens:
                    if request is not None:
                        started[0] = request.joined_at
                    self.generation.observe_waits(started[0] - job.arrived, time.perf_counter() - job.arrived, True)
                tokens += ids
                text, reason, _ = generator.text_of(tokens, sampling)
                done = reason == "stop" or len(tokens) >= sampling.max_new_tokens
                upto = len(text) if done else len(text) - held_back(text, sampling.stop)
                if upto > len(sent) and text.startswith(sent):
                    yield event(text[len(sent) : upto])
                    sent = text[:upto]
            generation = await running
            self.generation.observe_generate(
                request.peak_rows if request else 1,
                generation.completion_tokens,
                time.perf_counter() - started[0],
                [generation.finish_reason],
            )
            if generation.text.startswith(sent) and len(generation.text) > len(sent):
                yield event(generation.text[len(sent) :])
            elif not generation.text.startswith(sent):  # a decoder that rewrote its earlier text: can't take it back
                logger.warning("streamed text diverged from the final answer; the stream kept what it had sent")
            usage = {
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
                "total_tokens": generation.prompt_tokens + generation.completion_tokens,
            }
            yield event(finish_reason=generation.finish_reason, usage=usage)
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()  # the client went away (or we are done): the generate loop stops at its next step

    def _head(self, job: Job, model: str | None, chat: bool, chunk: bool) -> dict:
        loaded = job.loaded
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": model or loaded.name or Path(self.args.model_uri).name,
            # OpenAI's field for the backend an answer came from: here the registry version.
            "system_fingerprint": f"models:/{loaded.name}/{loaded.version}" if loaded.version else None,
        }

    def model(self) -> dict:
        loaded = self.loaded
        defaults = loaded.model.defaults
        return {
            "name": loaded.name,
            "version": loaded.version,
            "uri": public_uri(self.args.model_uri),
            "task": self.args.task,
            "loaded_at": loaded.loaded_at,
            "follows": self.args.model_uri if self.follower else None,
            "generation": {
                "max_new_tokens": defaults.max_new_tokens,
                "temperature": defaults.temperature,
                "top_p": defaults.top_p,
                "stop": list(defaults.stop),
                "dtype": str(loaded.model.model.dtype).removeprefix("torch."),  # evaluate.dtype, as it loaded
            },
            "limits": {
                "max_prompt_tokens": self.args.max_prompt_tokens,
                "max_new_tokens_ceiling": self.args.max_new_tokens_ceiling,
            },
        }

    def models(self) -> dict:
        """GET /v1/models, which OpenAI clients ask first: the one model served."""
        loaded = self.loaded
        name = loaded.name or Path(self.args.model_uri).name
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": int(loaded.loaded_at), "owned_by": "raylane"}],
        }


def _settle(future: asyncio.Future, outcome) -> None:
    if future.done():  # the request went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _chat_deployment(args: ServeArgs):
    """The HTTP-bound deployment class, made fresh per build (see raylane.serve.scoring._scoring_deployment)."""
    api = guarded_api(args, "causal_lm (OpenAI-style chat and text completions) served by raylane on Ray Serve.")
    ChatBody, CompletionBody = request_models(args.max_new_tokens_ceiling)  # noqa: N806 (classes, named as ones)
    streamed = {200: {"content": {SSE: {"schema": {"type": "string"}}}, "description": "JSON, or SSE with stream"}}

    @serve.deployment(name=DEPLOYMENT, health_check_period_s=10, health_check_timeout_s=30)
    @serve.ingress(api)
    class Chat(ChatReplica):
        @api.post("/v1/chat/completions", response_model=ChatCompletion, responses=streamed)
        async def chat_completions(self, request: ChatBody, raw: Request):
            return await super().respond(request, chat=True, scope=raw.scope)

        @api.post("/v1/completions", response_model=TextCompletion, responses=streamed)
        async def completions(self, request: CompletionBody, raw: Request):
            return await super().respond(request, chat=False, scope=raw.scope)

        @api.get("/v1/models")
        def models(self) -> dict:
            return super().models()

        @api.get("/healthz")
        def healthz(self) -> dict:
            return super().healthz()

        @api.get("/model")
        def model(self) -> dict:
            return super().model()

    return Chat


def build_chat_app(args: ServeArgs) -> serve.Application:
    return bind_app(_chat_deployment(args).options(**deployment_options(args)), args)
