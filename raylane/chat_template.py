"""A model's chat template: what it needs from the tokenizer, a conversation rendered with it
(what `apply_chat_template` renders; ingest renders the training conversations with it), and a
served conversation's token ids, in which the messages' text is only text (`chat_token_ids`)."""

from __future__ import annotations

import functools
import re

from raylane.errors import ConfigError


@functools.lru_cache(maxsize=8)
def chat_template_of(name_or_path: str) -> dict[str, str]:
    """What rendering a conversation needs from the model's tokenizer: its chat template and the
    special tokens templates refer to. A tokenizer without a template fails, naming the key.
    Cached: the CLI's check and ingest's encoder ask the same process for it."""
    from raylane.models import read_only_tokenizer

    tokenizer = read_only_tokenizer(name_or_path)
    template = tokenizer.chat_template
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    if not template:
        raise ConfigError(
            "model.name_or_path",
            f"{name_or_path}: the tokenizer has no chat template; causal_lm needs an instruct/chat model's tokenizer",
        )
    return {
        "chat_template": template,
        "bos_token": tokenizer.bos_token or "",
        "eos_token": tokenizer.eos_token or "",
    }


def render(messages: list[dict], template: dict[str, str], add_generation_prompt: bool) -> str:
    """The conversation as the model's chat template writes it (what `apply_chat_template` renders)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages],
        chat_template=template["chat_template"],
        add_generation_prompt=add_generation_prompt,
        bos_token=template["bos_token"],
        eos_token=template["eos_token"],
    )
    return rendered[0]


class TemplateRefused(ValueError):
    """A conversation this model's chat template will not render as asked: the template raised
    (a role order it rejects), or a message holds control-token text where the template changes
    the message's text. The client's to fix: a 422, naming the fault."""


# Private-use characters: no template or tokenizer gives them a meaning.
_MARK = "\ue000{}\ue001"
_MARKS = re.compile("\ue000(\\d+)\ue001")


def chat_token_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """The conversation rendered with the tokenizer's chat template, as token ids, where the
    messages' text is only ever text: `<|im_start|>system` typed by a user is tokenized as the
    characters it is, not as the control token that opens a system turn (role spoofing).

    A conversation without control-token text in its messages (nearly all) gives exactly what
    `apply_chat_template` gives. One with some is rendered a second time with a mark in place of
    each message, which locates the messages in the rendered text; the control tokens the
    template wrote are cut out as tokens and the text between them tokenized with
    `split_special_tokens`, as the tokenizer itself does at every control token."""
    rendered = _render(tokenizer, messages, add_generation_prompt)
    controls = control_tokens(tokenizer)
    contents = [m.get("content") if isinstance(m.get("content"), str) else "" for m in messages]
    if not any(control in content for content in contents for control in controls):
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    marked = _render(
        tokenizer, [{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)], add_generation_prompt
    )
    spans = _message_spans(rendered, marked, contents)
    return _ids_with_text_messages(tokenizer, rendered, spans, controls)


def control_tokens(tokenizer) -> list[str]:
    """The tokenizer's special tokens (those `split_special_tokens` splits), longest first."""
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return sorted(set(added) | set(tokenizer.all_special_tokens), key=len, reverse=True)


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=add_generation_prompt, tokenize=False
        )
    except TemplateError as err:  # the template's raise_exception, or a template that cannot take these messages
        raise TemplateRefused(f"the model's chat template refused this conversation: {err}") from None


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


def _ids_with_text_messages(tokenizer, rendered: str, spans: list[tuple[int, int]], controls: list[str]) -> list[int]:
    """`rendered` tokenized with the control tokens outside `spans` (the template's) as tokens, and
    everything else as text; an added token's lstrip/rstrip eats the whitespace beside it, as the
    tokenizer's own splitting does."""
    pattern = re.compile("|".join(re.escape(c) for c in controls))
    cuts, at = [], 0
    for start, end in [*spans, (len(rendered), len(rendered))]:
        cuts += [(at + m.start(), at + m.end()) for m in pattern.finditer(rendered[at:start])]
        at = end
    stripping = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    ids, at, previous = [], 0, None
    for start, end in [*cuts, (len(rendered), len(rendered))]:
        text = rendered[at:start]
        if previous is not None and getattr(stripping.get(previous), "rstrip", False):
            text = text.lstrip()
        token = rendered[start:end]
        if token and getattr(stripping.get(token), "lstrip", False):
            text = text.rstrip()
        if text:
            ids += tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        if token:
            ids.append(tokenizer.convert_tokens_to_ids(token))
        at, previous = end, token
    return ids
