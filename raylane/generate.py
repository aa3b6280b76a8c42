"""The generation engine of chat models (causal_lm): a causal LM and its tokenizer loaded from a
model directory, the prompt built with the tokenizer's chat template, and `transformers`
`generate` over a left-padded batch, each row stopped by its own max_tokens and stop strings.
Serving replicas, evaluation and the pyfunc all answer through it, so a model says the same
wherever it runs.

Sampling is done per row (`_RowSampler`), inside a greedy `generate` call: rows with different
temperatures, top_p and seeds share one call, and a seeded row draws from its own random
generator, so it answers the same whatever it is batched with.

Blocking calls, no Ray, no HTTP: the caller decides what runs where."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from raylane.chat_template import ChatEncoder

DEFAULT_SAMPLING = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "stop": []}


@dataclass(frozen=True)
class Sampling:
    """How one request is generated. Every field is per row (`_RowSampler`, `_RowStops`), so
    requests with different settings share one `generate` call."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None  # with temperature > 0: the same seed draws the same tokens


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length" (max_new_tokens)
    prompt_tokens: int
    completion_tokens: int  # generated, the end-of-sequence token included; not the text re-tokenized


class Generator:
    """A causal LM from `model_dir` (a PEFT adapter directory is merged onto its base), on `device`."""

    def __init__(self, model_dir: str, threads: int = 0, device: str | None = "cpu"):
        from transformers import AutoModelForCausalLM

        from raylane.models import load_pretrained, load_tokenizer
        from raylane.tasks.saved import read_saved_task

        saved = read_saved_task(model_dir)
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = load_tokenizer(model_dir)
        if self.tokenizer.eos_token_id is None or not self.tokenizer.chat_template:
            raise ValueError(f"{model_dir}: the tokenizer needs an eos token and a chat template to serve chat")
        self.tokenizer.padding_side = "left"  # generation continues every row from its last column
        self.chat = ChatEncoder.of(self.tokenizer)
        self.dtype = compute_dtype(saved.extras.get("generation", {}).get("dtype", "auto"), self.device)
        self.model = load_pretrained(AutoModelForCausalLM, model_dir, dtype=self.dtype).to(self.device).eval()
        self.defaults = defaults_from(saved.extras)

    def chat_prompt(self, messages: Sequence[dict]) -> list[int]:
        """The chat template's prompt as ingest and evaluation encode it (`ChatEncoder`: the
        messages' text cleaned, and only ever text); `raylane.chat_template.TemplateRefused` where
        the template refuses."""
        return self.chat.ids(list(messages), add_generation_prompt=True)

    def text_prompt(self, prompt: str) -> list[int]:
        # The tokenizer's own special tokens (a Llama's BOS), as OpenAI-compatible servers do.
        return list(self.tokenizer(prompt)["input_ids"])

    def generate(
        self, prompts: list[list[int]], samplings: list[Sampling], on_step: Callable[[torch.Tensor], None] | None = None
    ) -> list[Generation]:
        """One `generate` call over `prompts`, each row sampled with its own settings and stopped at
        its own eos, max_new_tokens or stop string; the call ends when every row has."""
        batch = self.tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(self.device)
        width = batch["input_ids"].shape[1]
        stops = _RowStops(self.tokenizer, width, samplings)
        out = self._generate(batch, samplings, stops, _Steps(on_step) if on_step else None)
        return [
            self._finish(row[width:].tolist(), sampling, stops.ended[i], len(prompt))
            for i, (row, sampling, prompt) in enumerate(zip(out, samplings, prompts))
        ]

    def generate_all(self, prompts: list[list[int]], sampling: Sampling, batch_size: int) -> list[Generation]:
        """Every prompt answered with `sampling`, `batch_size` prompts to a `generate` call, in order
        (a caller that sorts them by length first pads less)."""
        answers: list[Generation] = []
        for start in range(0, len(prompts), batch_size):
            part = prompts[start : start + batch_size]
            answers.extend(self.generate(part, [sampling] * len(part)))
        return answers

    def stream(
        self, prompt: list[int], sampling: Sampling, on_step: Callable[[torch.Tensor], None], cancelled: threading.Event
    ) -> Generation:
        """One prompt, `on_step(token_ids)` called with each new token as it is generated; stops
        early once `cancelled` is set (the client went away)."""
        batch = self.tokenizer.pad({"input_ids": [prompt]}, return_tensors="pt").to(self.device)
        width = batch["input_ids"].shape[1]
        stops = _RowStops(self.tokenizer, width, [sampling], cancelled)
        out = self._generate(batch, [sampling], stops, _Steps(on_step))
        return self._finish(out[0][width:].tolist(), sampling, stops.ended[0], len(prompt))

    def _generate(self, batch, samplings: list[Sampling], stops: _RowStops, streamer) -> torch.Tensor:
        # Greedy for `generate`: _RowSampler leaves a sampled row's drawn token as its only finite
        # logit. (`generate`'s own sampling applies one temperature and one random stream to the
        # whole batch; do_sample given twice once failed every sampled batch with a TypeError.)
        with torch.inference_mode():
            return self.model.generate(
                **batch,
                max_new_tokens=max(s.max_new_tokens for s in samplings),
                do_sample=False,
                logits_processor=LogitsProcessorList([_RowSampler(samplings)]),
                stopping_criteria=StoppingCriteriaList([stops]),
                streamer=streamer,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )

    def _finish(self, tokens: list[int], sampling: Sampling, ended: int | None, prompt_tokens: int) -> Generation:
        """The row's answer: its tokens up to the first of eos (kept in the count, not the text),
        its own max_new_tokens, or where a stop string was seen; the text cut before the stop."""
        text, reason, count = self.text_of(tokens, sampling)
        if ended is not None and ended < count:  # stopped by _RowStops before any eos
            count = ended
        return Generation(text, reason, prompt_tokens, count)

    def text_of(self, tokens: list[int], sampling: Sampling) -> tuple[str, str, int]:
        """(text, finish_reason, tokens counted) of generated `tokens` so far, as the final answer
        would say it: the streamed chunks are cut from this same text, so they add up to it."""
        eos = self.tokenizer.eos_token_id
        count = min(tokens.index(eos) + 1 if eos in tokens else len(tokens), sampling.max_new_tokens)
        ended = eos in tokens[:count]
        text = self.tokenizer.decode(tokens[: count - ended], skip_special_tokens=True)
        reason = "stop" if ended else "length"
        cut = first_stop(text, sampling.stop)
        if cut is not None:
            return text[:cut], "stop", count
        return text, reason, count

    def answer_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The MLflow pyfunc's answer: `text` (JSON chat messages, or a plain prompt) in, `reply` out."""
        from raylane.tasks.chat import parse_messages

        conversations = [parse_messages(str(v)) or [{"role": "user", "content": str(v)}] for v in frame["text"]]
        replies = self.generate([self.chat_prompt(m) for m in conversations], [self.defaults] * len(conversations))
        return pd.DataFrame({"reply": [r.text for r in replies]})

    def canary(self) -> Generation:
        """A real two-token generation: a replica whose model is broken must not look healthy."""
        return self.generate([self.chat_prompt([{"role": "user", "content": "ping"}])], [Sampling(2)])[0]


def compute_dtype(name: str, device: torch.device):
    """The dtype a model generates in (`evaluate.dtype`, saved with it): "auto" is the checkpoint's
    own on a GPU and float32 on a CPU, where a checkpoint's bf16 would be slower without native
    support and would change what was measured in fp32."""
    if name == "auto":
        return "auto" if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def defaults_from(extras: dict) -> Sampling:
    """The model's generation defaults (raylane_task.json extras.generation), field by field."""
    given = {**DEFAULT_SAMPLING, **extras.get("generation", {})}
    return Sampling(
        int(given["max_new_tokens"]), float(given["temperature"]), float(given["top_p"]), tuple(given["stop"])
    )


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of `text` a stream must hold back: the longest tail that
    could still grow into a stop string, or an incomplete UTF-8 character (decoded as U+FFFD)."""
    if text.endswith("\ufffd"):
        return len(text) - len(text.rstrip("\ufffd"))
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


class _RowSampler(LogitsProcessor):
    """Per sampled row (temperature > 0): softmax at its temperature, its top_p nucleus, one token
    drawn, with its own `torch.Generator` when it has a seed (else torch's global one), and left as
    the row's only finite logit. Greedy rows pass through untouched."""

    def __init__(self, samplings: list[Sampling]):
        self.rows = [(i, s) for i, s in enumerate(samplings) if s.temperature > 0]
        self.generators: dict[int, torch.Generator] = {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for i, sampling in self.rows:
            probs = nucleus(torch.softmax(scores[i].float() / sampling.temperature, dim=-1), sampling.top_p)
            token = torch.multinomial(probs, 1, generator=self._generator(i, sampling.seed, scores.device))
            scores[i] = -float("inf")
            scores[i, token] = 0.0
        return scores

    def _generator(self, row: int, seed: int | None, device: torch.device) -> torch.Generator | None:
        if seed is None:
            return None
        if row not in self.generators:  # one per row per call: a row's draws follow each other
            self.generators[row] = torch.Generator(device=device).manual_seed(seed)
        return self.generators[row]


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """`probs` less the tail outside the smallest set of tokens whose mass reaches `top_p` (the
    most likely token always stays); unnormalised, as `torch.multinomial` takes it."""
    if top_p >= 1.0:
        return probs
    ranked, order = probs.sort(descending=True)
    keep = ranked.cumsum(0) - ranked < top_p
    return torch.zeros_like(probs).scatter(0, order, ranked * keep)


class _RowStops(StoppingCriteria):
    """Per row: done at its own max_new_tokens, or once its generated text holds one of its stop
    strings; `ended[i]` is how many tokens row i had then. `generate` pads a finished row and goes
    on with the others, so requests with different limits share one batch."""

    def __init__(self, tokenizer, width: int, samplings: list[Sampling], cancelled: threading.Event | None = None):
        self.tokenizer, self.width, self.samplings, self.cancelled = tokenizer, width, samplings, cancelled
        self.ended: list[int | None] = [None] * len(samplings)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        steps = input_ids.shape[1] - self.width
        for i, sampling in enumerate(self.samplings):
            if self.ended[i] is None and (steps >= sampling.max_new_tokens or self._stopped(input_ids[i], sampling)):
                self.ended[i] = steps
        cancelled = self.cancelled is not None and self.cancelled.is_set()
        done = [cancelled or ended is not None for ended in self.ended]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _stopped(self, row: torch.Tensor, sampling: Sampling) -> bool:
        if not sampling.stop:
            return False
        # The whole generated text, decoded again each step: a stop string may span tokens, and
        # at a few hundred tokens this costs far less than the step itself.
        text = self.tokenizer.decode(row[self.width :], skip_special_tokens=True)
        return first_stop(text, sampling.stop) is not None


class _Steps(BaseStreamer):
    """`generate`'s streamer hook: the first `put` is the prompt, each later one the batch's new
    tokens (one per row), passed on to `on_step`."""

    def __init__(self, on_step: Callable[[torch.Tensor], None]):
        self.on_step, self.prompt_seen = on_step, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.on_step(value.reshape(-1).cpu())

    def end(self) -> None:
        pass
