"""A model's chat template, and the one way a conversation becomes token ids (`ChatEncoder`):
ingest encodes the training conversations with it, evaluation the test prompts, and the chat app
each request's, so the prompt served is token for token the prompt evaluated. A message's text is
cleaned the same way everywhere (`clean_message`) and is only ever text: `<|im_start|>system`
typed by a user is not the control token that opens a system turn.

It works on the Rust `tokenizers` tokenizer behind a model's (what ingest's workers load without
`transformers`) and the template's text and special tokens (`chat_template_of`)."""

from __future__ import annotations

import functools
import re
from typing import Any

from raylane.errors import ConfigError

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_message(value: Any) -> str:
    """A message's text: control characters dropped, line ends made \\n, ends stripped; lines and
    inner spacing kept."""
    if value is None:
        return ""
    return _CONTROL.sub("", str(value).replace("\r\n", "\n").replace("\r", "\n")).strip()


def template_of(tokenizer) -> dict[str, str]:
    """The tokenizer's chat template and the special tokens a template may refer to (what
    `apply_chat_template` passes it); no "chat_template" key when it has none."""
    template = tokenizer.chat_template
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    tokens = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    tokens |= {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
    return {**tokens, "chat_template": template} if template else tokens


@functools.lru_cache(maxsize=8)
def chat_template_of(name_or_path: str) -> dict[str, str]:
    """`template_of` the model's tokenizer; one without a template fails, naming the key.
    Cached: the CLI's check and ingest's encoder ask the same process for it."""
    from raylane.models import read_only_tokenizer

    template = template_of(read_only_tokenizer(name_or_path))
    if "chat_template" not in template:
        raise ConfigError(
            "model.name_or_path",
            f"{name_or_path}: the tokenizer has no chat template; causal_lm needs an instruct/chat model's tokenizer",
        )
    return template


class TemplateRefused(ValueError):
    """A conversation this model's chat template will not render as asked: the template raised
    (a role order it rejects), or a message holds control-token text where the template changes
    the message's text. The client's to fix: a 422, naming the fault (at ingest: the row is
    quarantined)."""


def render(messages: list[dict], template: dict[str, str], add_generation_prompt: bool) -> str:
    """The conversation as the model's chat template writes it (what `apply_chat_template` renders)."""
    from jinja2 import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    tokens = {k: v for k, v in template.items() if k != "chat_template"}
    try:
        rendered, _ = render_jinja_template(
            conversations=[messages],
            chat_template=template["chat_template"],
            add_generation_prompt=add_generation_prompt,
            **tokens,
        )
    except TemplateError as err:  # the template's raise_exception, or one that cannot take these messages
        raise TemplateRefused(f"the model's chat template refused this conversation: {err}") from None
    return rendered[0]


class ChatEncoder:
    """Conversations to token ids with one tokenizer and template. `backend`: a Rust
    `tokenizers.Tokenizer` (a Hugging Face tokenizer's `backend_tokenizer`) without truncation."""

    def __init__(self, backend, template: dict[str, str]):
        self.backend, self.template = backend, template
        added = list(backend.get_added_tokens_decoder().values())
        self.added = {t.content: t for t in added}
        # Longest first, so a regex alternation takes `<|im_start|>` before any shorter prefix.
        self.controls = sorted({t.content for t in added if t.special}, key=len, reverse=True)

    @classmethod
    def of(cls, tokenizer) -> ChatEncoder:
        """The encoder of a Hugging Face (fast) tokenizer that has a chat template. A copy of its
        Rust tokenizer: `transformers` sets padding and truncation on its own for each call."""
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        return cls(backend, template_of(tokenizer))

    def ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """The conversation, its messages' text cleaned, rendered with the chat template, as token
        ids in which the messages' text is only text.

        A conversation without control-token text in its messages (nearly all) gives exactly what
        `apply_chat_template` gives. One with some is rendered a second time with a mark in place
        of each message, which locates the messages in the rendered text; the control tokens the
        template wrote are cut out as tokens and the text between them tokenized with special
        tokens split, as the tokenizer itself does at every control token."""
        messages = [{**m, "content": clean_message(m.get("content"))} for m in messages]
        rendered = render(messages, self.template, add_generation_prompt)
        contents = [m["content"] for m in messages]
        if not any(control in content for content in contents for control in self.controls):
            return self._encode(rendered)
        marked = [{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)]
        spans = _message_spans(rendered, render(marked, self.template, add_generation_prompt), contents)
        return self._ids_with_text_messages(rendered, spans)

    def _encode(self, text: str, split_special_tokens: bool = False) -> list[int]:
        self.backend.encode_special_tokens = split_special_tokens
        try:
            return list(self.backend.encode(text, add_special_tokens=False).ids)
        finally:
            self.backend.encode_special_tokens = False

    def _ids_with_text_messages(self, rendered: str, spans: list[tuple[int, int]]) -> list[int]:
        """`rendered` tokenized with the control tokens outside `spans` (the template's) as
        tokens, and everything else as text; an added token's lstrip/rstrip eats the whitespace
        beside it, as the tokenizer's own splitting does."""
        pattern = re.compile("|".join(re.escape(c) for c in self.controls))
        cuts, at = [], 0
        for start, end in [*spans, (len(rendered), len(rendered))]:
            cuts += [(at + m.start(), at + m.end()) for m in pattern.finditer(rendered[at:start])]
            at = end
        ids, at, previous = [], 0, None
        for start, end in [*cuts, (len(rendered), len(rendered))]:
            text = rendered[at:start]
            if previous is not None and getattr(self.added.get(previous), "rstrip", False):
                text = text.lstrip()
            token = rendered[start:end]
            if token and getattr(self.added.get(token), "lstrip", False):
                text = text.rstrip()
            if text:
                ids += self._encode(text, split_special_tokens=True)
            if token:
                ids.append(self.backend.token_to_id(token))
            at, previous = end, token
        return ids


def chat_token_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """`ChatEncoder.ids` with a Hugging Face tokenizer's encoder."""
    return ChatEncoder.of(tokenizer).ids(messages, add_generation_prompt)


# Private-use characters: no template or tokenizer gives them a meaning.
_MARK = "\ue000{}\ue001"
_MARKS = re.compile("\ue000(\\d+)\ue001")


def _message_spans(rendered: str, marked: str, contents: list[str]) -> list[tuple[int, int]]:
    """Where each message's text is in `rendered`, found by walking it beside `marked` (the same
    template output with a mark for each message): the template's own text must match exactly
    around each message, the message's text as sent or trimmed (templates that `| trim` it)."""
    parts = _MARKS.split(marked)  # template text, message index, template text, ...
    spans, at = [], 0
    for j in range(0, len(parts) - 1, 2):
        template_text, index = parts[j], int(parts[j + 1])
        if not rendered.startswith(template_text, at):
            raise TemplateRefused(_unlocated(index))
        at += len(template_text)
        shown = next((c for c in (contents[index], contents[index].strip()) if rendered.startswith(c, at)), None)
        if shown is None:
            raise TemplateRefused(_unlocated(index))
        spans.append((at, at + len(shown)))
        at += len(shown)
    if rendered[at:] != parts[-1]:
        raise TemplateRefused(_unlocated(len(contents) - 1))
    return spans


def _unlocated(index: int) -> str:
    return (
        f"messages[{index}]: the text holds a special token's text, and this model's chat template changes the "
        "message in a way that keeps it from being sent as plain text; remove the special token"
    )
