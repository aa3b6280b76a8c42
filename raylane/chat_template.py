"""A model's chat template: what it needs from the tokenizer, and a conversation rendered with it
(what `apply_chat_template` renders). Ingest renders the training conversations with it."""

from __future__ import annotations

import functools

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
