"""Continuous batching for chat models: a request joins the running batch at the next decoding
step and leaves it at the step it is done, so a short answer never waits for a long one and a
new request never waits for a batch to drain (what vLLM and Ray Serve LLM do, here over
`transformers`' own KV cache, on CPU or GPU).

The batch is one `DynamicCache` whose rows are left-padded to a common length: a joining request
is prefilled alone (its prompt, its own cache and first token), then padded and stacked onto the
running rows; a finished row is cut out by index, and columns that became padding for every row
are trimmed. Each step runs the model once over every row's last token, with each row's own
position and attention mask, and picks each row's next token with its own settings (greedy, or
temperature, top_p and seed as `raylane.generate` samples them).

Blocking, in one thread of its own (`ContinuousBatcher.start`, as a chat replica runs it) or in the
caller's (`answer_all`, as evaluation and batch generation do); no Ray, no HTTP. Requests come in
through `submit` from any thread, and results go out through the callbacks they bring, called in
the batcher's thread."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from transformers.cache_utils import DynamicLayer

from raylane.generate import Generation, Generator, Sampling, first_stop, nucleus

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Request:
    """One prompt to answer. `on_token(id)` is called with each token as it is generated (streams);
    `on_done(generation_or_error)` once, at the end; `cancelled` set: it leaves at the next step."""

    prompt: list[int]
    sampling: Sampling
    on_done: Callable[[Generation | BaseException], None]
    on_token: Callable[[int], None] | None = None
    cancelled: threading.Event | None = None
    tokens: list[int] = field(default_factory=list)
    random: torch.Generator | None = None
    joined_at: float = 0.0  # time.perf_counter() when its prefill began
    first_token_at: float = 0.0
    peak_rows: int = 1  # the most requests it was decoded beside, itself included
    answered: bool = False

    def answer(self, outcome: Generation | BaseException) -> None:
        self.answered = True
        _call(self.on_done, outcome)


class ContinuousBatcher:
    """Up to `max_batch_size` requests decoded together, each joining and leaving at any step."""

    def __init__(self, generator: Generator, max_batch_size: int):
        self.generator, self.max_batch_size = generator, max_batch_size
        self.model, self.device = generator.model, generator.device
        self.eos = generator.tokenizer.eos_token_id
        self.inbox: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="raylane-continuous", daemon=True)
        self._reset()

    def start(self) -> ContinuousBatcher:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Ends the thread once the rows in flight are answered; nothing may be submitted after."""
        self.inbox.put(None)

    def submit(self, request: Request) -> None:
        """Queues `request`; it joins the batch at the next step with room (thread-safe)."""
        self.inbox.put(request)

    def drain(self) -> None:
        """Answers every request submitted so far in the calling thread, then returns; instead of
        `start` (batch generation: no second thread, so no second OpenMP team; see
        `raylane.openmp`). Nothing may be submitted after."""
        self.stop()
        self._serve()

    def _reset(self) -> None:
        self.rows: list[Request] = []
        self.cache = None  # transformers.DynamicCache, rows left-padded to one length
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)  # each row's next position
        self.last = torch.zeros(0, dtype=torch.long, device=self.device)  # each row's last token

    def _serve(self) -> None:
        stopping = False  # after stop(): no one joins; the rows in flight are answered, then it ends
        while True:
            joining = []
            if not self.rows:  # idle: wait for work
                first = None if stopping else self.inbox.get()
                if first is None:
                    return
                joining.append(first)
            while not stopping and len(self.rows) + len(joining) < self.max_batch_size:
                try:
                    more = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                joining.append(more)
            try:
                with torch.inference_mode():
                    for request in joining:
                        self._join(request)
                    if self.rows:
                        self._step()
            except Exception as err:  # the batch's state is suspect: every row in it fails, the next starts clean
                logger.exception("a continuous batch failed; its %d requests get the error", len(self.rows))
                for request in [*self.rows, *joining]:
                    if not request.answered:
                        request.answer(err)
                self._reset()

    def _join(self, request: Request) -> None:
        """Prefills `request` alone and stacks it onto the running rows, left-padded to one length."""
        request.joined_at = time.perf_counter()
        sampling = request.sampling
        if sampling.temperature > 0 and sampling.seed is not None:
            request.random = torch.Generator(device=self.device).manual_seed(sampling.seed)
        prompt = torch.tensor([request.prompt], dtype=torch.long, device=self.device)
        # Only the last position's logits are needed: a prompt's other logits are a fifth of its compute.
        out = self.model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache, width = out.past_key_values, prompt.shape[1]
        _check_layers(cache)
        token = self._pick(request, out.logits[0, -1])
        if isinstance(token, Exception):  # its first token cannot be drawn: it fails alone
            request.answer(token)
            return
        ones = torch.ones((1, width), dtype=torch.long, device=self.device)
        if self.cache is None:  # the batch's first row: its cache becomes the batch's, with headroom
            cache.layers = [_Headroom(layer.keys, layer.values) for layer in cache.layers]
            self.cache, self.mask = cache, ones
        else:
            length = self.mask.shape[1]
            common = max(length, width)
            for running, joining in zip(self.cache.layers, cache.layers):
                running.hold(
                    _stack(running.keys, joining.keys, common - length, common - width),
                    _stack(running.values, joining.values, common - length, common - width),
                )
            self.mask = _stack(self.mask, ones, common - length, common - width)
        self.rows.append(request)
        self.positions = torch.cat([self.positions, torch.tensor([width], device=self.device)])
        self.last = torch.cat([self.last, torch.tensor([token], device=self.device)])
        self._advance([token])

    def _step(self) -> None:
        """One decoding step over every row: each row's last token in, each row's next token out."""
        rows = len(self.rows)
        self.mask = torch.cat([self.mask, torch.ones((rows, 1), dtype=torch.long, device=self.device)], dim=1)
        out = self.model(
            input_ids=self.last[:, None],
            attention_mask=self.mask,
            position_ids=self.positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        logits = out.logits[:, -1]
        greedy = logits.argmax(-1).tolist()  # one pass for every row: a row at a time is 4 ms a step at 32 rows
        tokens = [
            greedy[i] if request.sampling.temperature <= 0 else self._pick(request, logits[i])
            for i, request in enumerate(self.rows)
        ]
        for request in self.rows:
            request.peak_rows = max(request.peak_rows, rows)
        self.positions = self.positions + 1
        self.last = torch.tensor([t if isinstance(t, int) else 0 for t in tokens], device=self.device)
        self._advance(tokens)

    def _pick(self, request: Request, logits: torch.Tensor) -> int | Exception:
        """The row's next token, or the error drawing it (NaN logits make `multinomial` raise):
        that row fails, its batch-mates go on."""
        sampling = request.sampling
        if sampling.temperature <= 0:
            return int(logits.argmax())
        try:
            probs = nucleus(torch.softmax(logits.float() / sampling.temperature, dim=-1), sampling.top_p)
            return int(torch.multinomial(probs, 1, generator=request.random))
        except RuntimeError as err:
            return err

    def _advance(self, tokens: list[int | Exception]) -> None:
        """Each row's new token recorded and sent; rows that are done (or whose token could not be
        drawn) answered and cut out (the newest `len(tokens)` rows when a row has just joined)."""
        first = len(self.rows) - len(tokens)
        done = []
        for i, token in enumerate(tokens, start=first):
            request = self.rows[i]
            if isinstance(token, Exception):
                request.answer(token)
                done.append(i)
                continue
            request.tokens.append(token)
            if len(request.tokens) == 1:
                request.first_token_at = time.perf_counter()
            if request.on_token is not None:
                _call(request.on_token, token)
            if self._finished(request):
                done.append(i)
        if not done:
            return
        for i in done:
            request = self.rows[i]
            if request.answered:
                continue
            text, reason, count = self.generator.text_of(request.tokens, request.sampling)
            request.answer(Generation(text, reason, len(request.prompt), count))
        finished = set(done)
        keep = [i for i in range(len(self.rows)) if i not in finished]
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self._reset()
            return
        index = torch.tensor(keep, device=self.device)
        self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
        # Columns that are padding in every row left: the next steps need not attend over them.
        start = int((self.mask.sum(0) > 0).nonzero()[0])
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.hold(layer.keys[index, :, start:], layer.values[index, :, start:])

    def _finished(self, request: Request) -> bool:
        sampling, tokens = request.sampling, request.tokens
        if tokens[-1] == self.eos or len(tokens) >= sampling.max_new_tokens:
            return True
        if request.cancelled is not None and request.cancelled.is_set():
            return True
        if sampling.stop:
            text = self.generator.tokenizer.decode(tokens, skip_special_tokens=True)
            return first_stop(text, sampling.stop) is not None
        return False


def answer_all(
    generator: Generator, prompts: list[list[int]], sampling: Sampling, max_batch_size: int
) -> list[Generation]:
    """Every prompt answered with `sampling`, in order, through a continuous batch of up to
    `max_batch_size` rows decoded in the calling thread (evaluation and batch generation: a row
    that ends early makes room for the next prompt at once, where a static batch would carry it
    to the end of its longest row). A model whose cache the batcher cannot stack falls back to
    static batches. Raises the first error a row met (a failed generation fails the caller, as a
    static batch's does)."""
    try:
        check_supported(generator)
    except ValueError:
        return generator.generate_all(prompts, sampling, max_batch_size)
    answers: list[Generation | BaseException | None] = [None] * len(prompts)
    batcher = ContinuousBatcher(generator, max_batch_size)
    for i, prompt in enumerate(prompts):
        batcher.submit(Request(prompt, sampling, partial(answers.__setitem__, i)))
    batcher.drain()
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return answers


def check_supported(generator: Generator) -> None:
    """Raises, naming the fallback, unless `generator`'s model keeps the KV cache this batcher
    stacks and cuts (one prefill of one token)."""
    token = torch.tensor([[generator.tokenizer.eos_token_id]], device=generator.device)
    with torch.inference_mode():
        _check_layers(generator.model(input_ids=token, use_cache=True).past_key_values)


def _left_pad(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """`tensor` with `n` zero columns before its sequence dimension (-2 for keys and values
    [batch, heads, length, dim], -1 for a mask [batch, length])."""
    if n == 0:
        return tensor
    dim = -2 if tensor.dim() == 4 else -1
    shape = list(tensor.shape)
    shape[dim] = n
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _stack(running: torch.Tensor, joining: torch.Tensor, pad_running: int, pad_joining: int) -> torch.Tensor:
    """The joining row under the running ones, each left-padded to the same length."""
    return torch.cat([_left_pad(running, pad_running), _left_pad(joining, pad_joining)])


class _Headroom(DynamicLayer):
    """A layer of the batch's KV cache whose keys and values are views into buffers with spare
    columns: a step writes its new column in place. `DynamicLayer` copies the whole cache into a
    new tensor at every step (`torch.cat`), a sixth of a step's time at 4 rows."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.hold(keys, values)

    def hold(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Takes `keys` and `values` ([batch, heads, length, dim]) as the layer's content, copied
        into buffers with room for `HEADROOM` more columns."""
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.key_buffer, self.value_buffer = _with_room(keys), _with_room(values)
        length = keys.shape[2]
        self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        length, new = self.keys.shape[2], key_states.shape[2]
        if length + new > self.key_buffer.shape[2]:
            self.hold(self.keys, self.values)
        self.key_buffer[:, :, length : length + new] = key_states
        self.value_buffer[:, :, length : length + new] = value_states
        self.keys, self.values = self.key_buffer[:, :, : length + new], self.value_buffer[:, :, : length + new]
        return self.keys, self.values


HEADROOM = 64  # columns a layer's buffer is allocated ahead: one reallocation every 64 steps


def _with_room(tensor: torch.Tensor) -> torch.Tensor:
    batch, heads, length, dim = tensor.shape
    buffer = tensor.new_empty((batch, heads, length + HEADROOM, dim))
    buffer[:, :, :length] = tensor
    return buffer


def _check_layers(cache) -> None:
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) not in (DynamicLayer, _Headroom) for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers or []})
        raise ValueError(
            f"continuous batching needs a full-attention KV cache (DynamicLayer); this model's has {kinds}: "
            "serve it with serve.scheduler: static"
        )


def _call(callback: Callable, value) -> None:
    """A callback's failure (a client gone) must not fail the other rows."""
    try:
        callback(value)
    except Exception:
        logger.exception("a continuous batching callback failed")
