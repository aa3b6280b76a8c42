"""Instruction fine-tuning (causal_lm) through the real stages on a local Ray: a corpus of good
and bad rows in both shapes ingested with every line accounted for; a tiny random Llama trained
on the answers alone until it answers the held-out prompts; its evaluation from its own
generations."""

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pytest

from raylane.config import load_config
from raylane.evaluate.stage import run_evaluation
from raylane.ingest.stage import run_ingest
from raylane.tasks.saved import read_saved_task
from raylane.train.driver import fit
from tests.chat_rows import BAD_CHAT_LINES, BAD_PROMPT_LINES, write_chat_corpus
from tests.paths import REPO_ROOT

GOOD_ROWS = 90  # 60 prompt/response rows, 30 conversations


def chat_config(tiny_causal_lm, source: Path, out: Path, *overrides: str):
    return load_config(
        REPO_ROOT / "configs" / "llm-sft.yaml",
        [
            f"data.source={source}",
            "data.test_source=''",
            "data.test_fraction=0.2",
            "data.val_fraction=0.2",
            "data.prompt_template=''",
            "data.max_length=64",
            f"model.name_or_path={tiny_causal_lm}",
            "train.peft=none",
            "train.batch_size=8",
            "train.epochs=8",
            "train.lr=5e-3",
            "train.metric=val_loss",
            "evaluate.max_new_tokens=4",
            "evaluate.extract=none",
            # The loop in local mode (no Ray Train start-up): what is tested is what SFT learns and
            # how it is scored; a real worker trains a chat model in tests/e2e/test_chat_run.py.
            "resources.num_workers=0",
            f"output_dir={out}",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def chat_corpus(tmp_path_factory):
    return write_chat_corpus(tmp_path_factory.mktemp("sft"), GOOD_ROWS)


@pytest.fixture(scope="module")
def prompt_dataset(ray_session, tiny_causal_lm, chat_corpus, tmp_path_factory):
    cfg = chat_config(
        tiny_causal_lm,
        chat_corpus[0],
        tmp_path_factory.mktemp("out"),
        "data.text_fields=[prompt]",
        "data.label_field=response",
    )
    return cfg, run_ingest(cfg).dataset


@pytest.mark.parametrize("shape", ["prompt", "messages"])
def test_every_line_is_accepted_or_quarantined_with_its_reason(
    shape, ray_session, tiny_causal_lm, chat_corpus, prompt_dataset, tmp_path
):
    if shape == "prompt":
        dataset, bad, good = prompt_dataset[1], BAD_PROMPT_LINES, GOOD_ROWS - GOOD_ROWS // 3
    else:
        cfg = chat_config(
            tiny_causal_lm, chat_corpus[1], tmp_path, "data.text_fields=[messages]", "data.label_field=messages"
        )
        dataset, bad, good = run_ingest(cfg).dataset, BAD_CHAT_LINES, GOOD_ROWS // 3
    m = dataset.manifest
    assert m.counts.lines == m.counts.input == good + len(bad)
    assert m.counts.accepted == good and sum(m.splits.values()) == good
    assert m.counts.quarantine_reasons == dict.fromkeys(bad, 1)
    quarantined = pads.dataset(Path(dataset.uri) / "quarantine").to_table().to_pylist()
    assert Counter(r["reason"] for r in quarantined) == Counter(list(bad))
    assert all(r["detail"] and r["raw"] for r in quarantined)
    rows = dataset.read_split("train").take_all()
    assert set(rows[0]) == {"text", "label", "input_ids", "length", "prompt_length"}
    assert all(0 < r["prompt_length"] < r["length"] == len(r["input_ids"]) <= 64 for r in rows)
    assert all(r["label"] in ("red", "green", "blue", "yellow") for r in rows)
    assert json.loads(rows[0]["text"])[-1]["role"] == "user"  # the answer is not in the prompt


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_sft_learns_the_answers_and_is_scored_by_its_generations(prompt_dataset, packing):
    cfg, dataset = prompt_dataset
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, packing=packing))
    trained = fit(cfg, dataset)
    assert trained.metrics["val_loss"] < 1.5  # from ~10 (uniform over 30k tokens) in 8 short epochs
    saved = read_saved_task(trained.model_dir)
    assert saved.task == "causal_lm" and saved.extras["generation"]["max_new_tokens"] == 4

    out = Path(cfg.output_dir) / f"evaluation-{'packed' if packing else 'padded'}"
    evaluation = run_evaluation(cfg, trained.model_dir, dataset, out)
    m = evaluation.metrics
    assert evaluation.rows == dataset.manifest.splits["test"] == m["generated_rows"]
    assert m["exact_match"] >= 0.8, m
    assert m["perplexity"] == pytest.approx(2.718281828 ** m["loss"], rel=1e-6)
    assert set(evaluation.per_class) <= {"red", "green", "blue", "yellow"}  # one-word answers are labels
    table = pd.read_csv(out / "generations.csv")
    assert len(table) == min(cfg.evaluate.table_rows, evaluation.rows)
    assert (table["match"] == (table["generation"].str.lower() == table["reference"].str.lower())).all()
    assert table["prompt"].str.startswith("Which colour").all()
