"""Conversations as inputs (the causal_lm task): what a model is asked, as chat messages.

A row is either prompt field(s) and a response field, or one field of chat `messages` (a JSON
list of {role, content}) ending with the assistant's answer; `data.label_field` then names the
same column. The inputs are the conversation up to that answer (the target, `Generation`, reads
the answer). Texts keep their lines (code and lists need them); only control characters go.

At ingest each conversation is rendered with the model's own chat template and tokenized
(`raylane.tokenize.ChatTokenizeBatch`): `prompt_length` marks where the answer starts, so training
puts the loss on the answer's tokens alone. A conversation over `data.max_length` tokens once
rendered is quarantined, not cut: a truncated answer would teach the model to stop mid-sentence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from raylane.chat_template import chat_template_of, clean_message
from raylane.hashing import stable_hash
from raylane.pii import mask_pii
from raylane.tasks.base import Inputs
from raylane.tasks.text import EMPTY_TEXT, MISSING_FIELD, TOO_LONG

ROLES = ("system", "user", "assistant")
UNKNOWN_ROLE = "unknown_role"
MALFORMED_MESSAGES = "malformed_messages"
ANSWER_IN_PROMPT = "answer_in_prompt"


def parse_messages(raw: str) -> list[dict] | None:
    """A JSON list of messages, or None when `raw` is not one (then it is plain text)."""
    text = raw.lstrip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse: plain text
        return None
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return value
    return None


def message_problem(messages: list[dict]) -> tuple[str, str]:
    """("", "") when every message has a known role and text content, else (reason, detail)."""
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            return UNKNOWN_ROLE, f"message {i} has role {str(role)[:40]!r}; known: {', '.join(ROLES)}"
        if not isinstance(message.get("content"), str):
            return MALFORMED_MESSAGES, f"message {i} has no text content"
    return "", ""


def answer_field(spec) -> str:
    """The field a row's answer comes from when that is not its messages field ("" when it is)."""
    return "" if spec.label_field in ("", *spec.field_names[:1]) else spec.label_field


class ChatInputs(Inputs):
    kind = "chat"
    modality = "text"
    column = "text"  # the conversation before the answer, as JSON messages
    drift_feature = "input_tokens"
    config_keys = frozenset({"data.prompt_template", "train.packing"})

    def example(self) -> dict[str, list]:
        return {"text": [json.dumps([{"role": "user", "content": "Say hello."}])]}

    def fields(self, data) -> list[str]:
        return self.prompt_fields(data)

    def prompt_fields(self, data) -> list[str]:
        """The columns a conversation's prompt is made of (what batch generation reads)."""
        return list(data.text_fields)

    def check_model(self, name_or_path: str) -> None:
        chat_template_of(name_or_path)  # a tokenizer without a chat template fails now

    def prepare(
        self, columns: list, spec, errors: list[str], sources: list[str], blobs: list | None = None
    ) -> dict[str, Any]:
        values = [column.to_pylist() for column in columns]
        out: dict[str, Any] = {
            "text": [],
            "hash": [],
            "n_chars": [],
            "reason": [],
            "detail": [],
            "pii": {kind: [] for kind in spec.pii_kinds},
        }
        answer_from = answer_field(spec)
        for error, raw in zip(errors, zip(*values)):
            messages, reason, detail = (
                ([], "", "") if error else self.conversation(raw, spec.prompt_template, spec.field_names, answer_from)
            )
            counts: dict[str, int] = {}
            if spec.pii_kinds and not reason:
                for message in messages:
                    message["content"], found = mask_pii(message["content"], spec.pii_kinds)
                    for kind, n in found.items():
                        counts[kind] = counts.get(kind, 0) + n
            text = json.dumps(messages, ensure_ascii=False) if messages else ""
            n_chars = sum(len(m["content"]) for m in messages)
            if not reason and n_chars > spec.max_chars:
                reason, detail = TOO_LONG, f"{n_chars} characters > data.max_chars={spec.max_chars}"
            out["text"].append(text)
            out["hash"].append(stable_hash(text))
            out["n_chars"].append(n_chars)
            out["reason"].append(reason)
            out["detail"].append(detail)
            for kind in spec.pii_kinds:
                out["pii"][kind].append(counts.get(kind, 0))
        return out

    @staticmethod
    def conversation(
        raw: tuple, template: str, names: Sequence[str], answer_from: str = ""
    ) -> tuple[list[dict], str, str]:
        """(the messages before the answer, problem reason, detail) of one row's raw fields (of
        the fields `names`); prompt fields fill `template` by name, or are joined by blank lines.
        A final assistant message is the answer and is left out (the target reads it), unless the
        answer comes from another field, `answer_from`: then that turn would be neither prompt
        nor answer, and the row is quarantined. Batch generation (`raylane predict`) builds its
        prompts with this too (a final assistant message left out: the model answers anew)."""
        if all(v is None for v in raw):
            return [], MISSING_FIELD, "every prompt field is missing"
        messages = parse_messages(raw[0]) if len(raw) == 1 and raw[0] is not None else None
        if messages is not None:
            reason, detail = message_problem(messages)
            if reason:
                return [], reason, detail
            messages = [{"role": m["role"], "content": clean_message(m["content"])} for m in messages]
            if messages[-1]["role"] == "assistant":
                if answer_from:
                    detail = (
                        f"the conversation in {names[0]!r} ends with an assistant message, but the answer comes "
                        f"from {answer_from!r}: end the conversation with the user's turn"
                    )
                    return [], ANSWER_IN_PROMPT, detail
                messages = messages[:-1]  # the answer: the target's
        else:
            parts = [clean_message(v) for v in raw]
            if template:
                prompt = template.format(**dict(zip(names, parts))).strip()
            else:
                prompt = "\n\n".join(p for p in parts if p)
            messages = [{"role": "user", "content": prompt}] if any(parts) else []
        if not any(m["content"] for m in messages if m["role"] == "user"):
            return [], EMPTY_TEXT, "no user message with text"
        return messages, "", ""

    # --- the tokenized dataset ----------------------------------------------------------------
    def encoder(self, name_or_path: str, max_length: int):
        from raylane.tokenize import ChatTokenizeBatch, chat_tokenize_batch, definition_digest, tokenizer_definition

        definition = tokenizer_definition(name_or_path)
        template = chat_template_of(name_or_path)
        kwargs = {"definition": definition, "template": template, "max_length": max_length}
        return chat_tokenize_batch, kwargs, ChatTokenizeBatch, definition_digest(definition + json.dumps(template))

    def shard_columns(self, batch) -> dict[str, Any]:
        return {
            "input_ids": batch.column("input_ids"),
            "length": batch.column("length"),
            "prompt_length": batch.column("prompt_length"),
        }

    columns = {
        "text": "string (JSON chat messages before the answer)",
        "label": "string (the answer)",
        "input_ids": "list<int32> (the rendered conversation with its answer)",
        "length": "int32",
        "prompt_length": "int32 (tokens before the answer: no loss on them)",
    }

    def split_stats(self, scan, max_length: int):
        from raylane.tasks.text import token_length_stats

        return "token_lengths", token_length_stats(scan, max_length)

    # --- model --------------------------------------------------------------------------------
    def load_model(self, name_or_path: str, labels: list[str], target, init: str = "pretrained"):
        from transformers import AutoModelForCausalLM

        from raylane.models import load_head_model

        return load_head_model(AutoModelForCausalLM, name_or_path, init)

    def load_processor(self, name_or_path: str):
        from raylane.models import load_tokenizer

        return load_tokenizer(name_or_path)

    def collate(self, processor, target, n_labels: int, extras: dict[str, Any], pack_width: int = 0):
        from raylane.tasks.collate import AnswerCollate

        return AnswerCollate(processor.pad_token_id or 0, pack_width=pack_width)
