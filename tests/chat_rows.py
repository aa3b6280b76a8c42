"""Instruction-tuning rows for the causal_lm tests: good rows in both shapes (prompt/response and
chat messages) and one bad row per quarantine reason, each with the reason it must get."""

from __future__ import annotations

import json
from pathlib import Path

COLOURS = ("red", "green", "blue", "yellow")
THINGS = ("apple", "leaf", "sky", "sun", "cherry", "grass", "sea", "banana", "rose", "frog", "lake", "lemon")


def good_rows(n: int) -> list[dict]:
    """`n` distinct rows: a question about a thing and a one-word colour answer; every third row
    is a conversation with a system message."""
    rows = []
    for i in range(n):
        thing, colour = THINGS[i % len(THINGS)], COLOURS[i % len(COLOURS)]
        question = f"Which colour goes with the {thing} number {i}?"
        if i % 3 == 0:
            messages = [
                {"role": "system", "content": "Answer with one word."},
                {"role": "user", "content": question},
                {"role": "assistant", "content": colour},
            ]
            rows.append({"messages": messages})
        else:
            rows.append({"prompt": question, "response": colour})
    return rows


# One bad row per reason (the row's line, the reason ingest must give it), for each shape of file.
BAD_PROMPT_LINES = {
    "empty_response": json.dumps({"prompt": "Say nothing at all, please.", "response": "   "}),
    "too_many_tokens": json.dumps({"prompt": "word " * 400, "response": "fine"}),
    "malformed_row": '{"prompt": "an unfinished line',
    "missing_field": json.dumps({"other": "no prompt here"}),
}
BAD_CHAT_LINES = {
    "unknown_role": json.dumps(
        {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    ),
    "no_final_answer": json.dumps({"messages": [{"role": "user", "content": "Is anyone there?"}]}),
    "empty_response": json.dumps(
        {"messages": [{"role": "user", "content": "Quiet?"}, {"role": "assistant", "content": ""}]}
    ),
    "empty_text": json.dumps(
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "ok"}]}
    ),
}


def write_chat_corpus(directory: Path, n_good: int = 60) -> tuple[Path, Path]:
    """(prompt/response file, messages file): the good rows by shape, then that shape's bad lines."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = good_rows(n_good)
    plain = directory / "sft.jsonl"
    lines = [json.dumps(r) for r in rows if "prompt" in r] + list(BAD_PROMPT_LINES.values())
    plain.write_text("\n".join(lines) + "\n")
    chats = directory / "sft-chat.jsonl"
    lines = [json.dumps(r) for r in rows if "messages" in r] + list(BAD_CHAT_LINES.values())
    chats.write_text("\n".join(lines) + "\n")
    return plain, chats


def preference_rows(n: int, start: int = 0) -> list[dict]:
    """`n` distinct pairs: a question about a thing, its colour as the chosen answer and the next
    colour as the rejected one (a set a model can learn to separate)."""
    rows = []
    for i in range(start, start + n):
        thing = THINGS[i % len(THINGS)]
        colour = COLOURS[THINGS.index(thing) % len(COLOURS)]
        wrong = COLOURS[(THINGS.index(thing) + 1) % len(COLOURS)]
        rows.append({"prompt": f"Which colour goes with the {thing} number {i}?", "chosen": colour, "rejected": wrong})
    return rows


# One bad pair per reason ingest must give it.
BAD_PAIR_LINES = {
    "same_answers": json.dumps({"prompt": "Which colour is the sea?", "chosen": "blue", "rejected": "blue"}),
    "empty_rejected": json.dumps({"prompt": "Which colour is the sun?", "chosen": "yellow", "rejected": "  "}),
    "empty_response": json.dumps({"prompt": "Which colour is grass?", "chosen": "", "rejected": "red"}),
    "too_many_tokens": json.dumps({"prompt": "word " * 400, "chosen": "fine", "rejected": "bad"}),
    "missing_field": json.dumps({"prompt": "Which colour is a lemon?", "chosen": "yellow"}),
    "malformed_row": '{"prompt": "an unfinished line',
    "answer_in_prompt": json.dumps(
        {
            "prompt": json.dumps(
                [{"role": "user", "content": "Colour of snow?"}, {"role": "assistant", "content": "white"}]
            ),
            "chosen": "white",
            "rejected": "black",
        }
    ),
}


def write_preference_corpus(directory: Path, n_good: int = 60) -> Path:
    """A JSONL file of `n_good` good pairs, then one bad line per reason (`BAD_PAIR_LINES`)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pairs.jsonl"
    lines = [json.dumps(r) for r in preference_rows(n_good)] + list(BAD_PAIR_LINES.values())
    path.write_text("\n".join(lines) + "\n")
    return path
