"""What POST /v1/chat/completions and POST /v1/completions accept and answer: the OpenAI shapes,
strict (an unknown field is a 422, not ignored), each bad value a 422 whose message names what is
wrong and the limit it broke. Pure pydantic: no model, no Ray.

`request_models(ceiling)` gives the request classes with this deployment's max_tokens ceiling
(serve.max_new_tokens_ceiling); the prompt's length in tokens is checked by the replica, which
holds the tokenizer."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from raylane.tasks.chat import ROLES
from raylane.tasks.text import TEXT_CEILING

MAX_STOPS = 4
# Below this, logits / temperature overflow to inf and softmax gives NaN: a request asking for
# "almost greedy" gets 0 (greedy) or at least this, never a sampler that raises mid-batch.
MIN_TEMPERATURE = 1e-2
STOP_CEILING = 200  # characters in one stop string
DEFAULT_CEILING = 512  # ServeConfig.max_new_tokens_ceiling's default


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(_Strict):
    role: str = Field(description="system, user or assistant")
    content: str = Field(max_length=TEXT_CEILING, description="The message's text")

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
        return role


class GenerationOptions(_Strict):
    """The options both routes share; a missing one takes the model's default (its
    raylane_task.json extras.generation)."""

    max_tokens_ceiling: ClassVar[int] = DEFAULT_CEILING

    model: str | None = Field(None, max_length=200, description="Echoed in the answer; the deployment serves one model")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (serve.max_new_tokens_ceiling)")
    temperature: float | None = Field(
        None, ge=0, le=2, allow_inf_nan=False, description=f"0: greedy (deterministic); else {MIN_TEMPERATURE} to 2"
    )
    top_p: float | None = Field(
        None, gt=0, le=1, allow_inf_nan=False, description="Nucleus sampling mass (with temperature > 0)"
    )
    stop: str | list[str] | None = Field(None, description=f"Up to {MAX_STOPS} strings that end the answer")
    seed: int | None = Field(
        None,
        ge=0,
        lt=2**63,
        description="With temperature > 0: the same seed (and request) samples the same answer, batched or streamed",
    )
    n: int = Field(1, description="Answers per request: only 1")
    stream: bool = Field(False, description="Server-sent events, a chunk per token, then data: [DONE]")

    @field_validator("temperature")
    @classmethod
    def _greedy_or_sampled(cls, temperature: float | None) -> float | None:
        if temperature is not None and 0 < temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {temperature:g}")
        return temperature

    @field_validator("max_tokens")
    @classmethod
    def _within_ceiling(cls, max_tokens: int | None) -> int | None:
        if max_tokens is not None and max_tokens > cls.max_tokens_ceiling:
            raise ValueError(
                f"max_tokens {max_tokens} is over this deployment's limit of {cls.max_tokens_ceiling} "
                "(serve.max_new_tokens_ceiling)"
            )
        return max_tokens

    @field_validator("stop")
    @classmethod
    def _few_short_stops(cls, stop: str | list[str] | None) -> list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop
        if stops is None:
            return None
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings, got {len(stops)}")
        if any(not s or len(s) > STOP_CEILING for s in stops):
            raise ValueError(f"a stop string must be 1 to {STOP_CEILING} characters")
        return stops

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError(f"n={n}: this deployment gives exactly 1 choice per request")
        return n


class ChatRequest(GenerationOptions):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000, description="The conversation so far")


class CompletionRequest(GenerationOptions):
    prompt: str = Field(max_length=TEXT_CEILING, description="The text to continue, as is (no chat template)")


def request_models(ceiling: int) -> tuple[type[ChatRequest], type[CompletionRequest]]:
    """(chat, completion) request classes whose max_tokens may be at most `ceiling`."""
    extra = {"max_tokens_ceiling": ceiling, "__module__": __name__}
    return (
        type("ChatCompletionRequest", (ChatRequest,), extra),
        type("TextCompletionRequest", (CompletionRequest,), extra),
    )


# The answers, for the OpenAPI schema (the replica builds them as dicts).
FinishReason = Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = Field(description="Tokens generated, the end-of-sequence token included")
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    system_fingerprint: str | None = Field(None, description="models:/<name>/<version> that answered, if registered")
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason


class TextCompletion(BaseModel):
    id: str
    system_fingerprint: str | None = Field(None, description="models:/<name>/<version> that answered, if registered")
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
