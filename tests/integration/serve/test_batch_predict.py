"""`predict`: files scored by Ray Data actors into Parquet, every input row answered, for text and
for images (a folder, and a column of bytes); a rerun replaces what the last one wrote. A chat
model answers each row (prompt fields or messages) or quarantines it with the reason."""

import io
import json
import shutil

import pandas as pd
import pyarrow.parquet as pq

from raylane.generate import Generator
from raylane.models import load_tokenizer
from raylane.serve.batch import MARKER, predict_files
from raylane.serve.generate_files import QUARANTINE_DIR
from raylane.tasks import get_task
from raylane.tasks.saved import SavedTask
from tests.paths import REPO_ROOT
from tests.tiny_model import TINY_CHAT_TEMPLATE


def _png(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (12, 12), shade).save(buffer, "PNG")
    return buffer.getvalue()


def _image_model(tiny_image_model, directory):
    """The tiny ResNet, untrained, exported as training exports a model (with its task)."""
    task = get_task("image_classification")
    model = task.inputs.load_model(str(tiny_image_model), ["dark", "bright"], task.target, init="config")
    model.save_pretrained(directory)
    task.inputs.load_processor(str(tiny_image_model)).save_pretrained(directory)
    SavedTask("image_classification", ["dark", "bright"]).write(directory)
    return str(directory)


def test_text_files_are_scored_row_for_row_and_a_rerun_replaces(
    smoke_dataset, smoke_cfg_factory, trained_classifier, tmp_path
):
    cfg = smoke_cfg_factory()
    model_dir = trained_classifier.model_dir
    holdout = REPO_ROOT / "data" / "made-with-ml" / "holdout.csv"
    out = tmp_path / "predictions"
    out.mkdir()
    (out / MARKER).write_text("")  # what an earlier `raylane predict` left: it may be replaced
    (out / "stale.parquet").write_bytes(b"left by an earlier run")
    rows, quarantined = predict_files(cfg, model_dir, str(holdout), out)
    scored = pq.read_table(out).to_pandas()
    assert rows == len(scored) == len(pd.read_csv(holdout)) and quarantined == {}
    assert not (out / "stale.parquet").exists()
    assert set(scored["pred_label"]) <= set(smoke_dataset.label_names)
    assert scored["score"].between(0, 1).all()


def test_images_from_a_folder_and_from_a_column(ray_session, smoke_cfg_factory, tiny_image_model, tmp_path):
    cfg = smoke_cfg_factory("task=image_classification", "data.image_field=image")
    model_dir = _image_model(tiny_image_model, tmp_path / "model")
    folder = tmp_path / "images"
    for label, shade in (("dark", 10), ("bright", 240)):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            (folder / label / f"{i}.png").write_bytes(_png(shade))
    rows, _ = predict_files(cfg, model_dir, str(folder), tmp_path / "from-folder")
    scored = pq.read_table(tmp_path / "from-folder").to_pandas()
    assert rows == 6 and set(scored["pred_label"]) <= {"dark", "bright"}
    assert sorted(p.rsplit("/", 1)[-1] for p in scored["path"]) == sorted(["0.png", "1.png", "2.png"] * 2)

    table = tmp_path / "images.parquet"
    pd.DataFrame({"name": ["a", "b"], "image": [_png(10), _png(240)]}).to_parquet(table)
    assert predict_files(cfg, model_dir, str(table), tmp_path / "from-column") == (2, {})


# The tiny chat template, refusing (as real ones do) a conversation that opens with the assistant.
REFUSING_TEMPLATE = (
    "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('a conversation opens with the user') }}{% endif %}"
    + TINY_CHAT_TEMPLATE
)


def _chat_model(tiny_causal_lm, directory) -> str:
    """The tiny causal LM as training exports a chat model: its task, and the generation settings
    it was evaluated with (3 tokens, greedy)."""
    shutil.copytree(tiny_causal_lm, directory)
    tokenizer = load_tokenizer(str(directory))
    tokenizer.chat_template = REFUSING_TEMPLATE
    tokenizer.save_pretrained(directory)
    SavedTask("causal_lm", [], {"generation": {"max_new_tokens": 3}}).write(directory)
    return str(directory)


def _alone(generator: Generator, messages: list[dict]) -> str:
    return generator.generate([generator.chat_prompt(messages)], [generator.defaults])[0].text


def test_a_chat_model_answers_every_row_or_quarantines_it_with_the_reason(
    ray_session, smoke_cfg_factory, tiny_causal_lm, tmp_path
):
    model_dir = _chat_model(tiny_causal_lm, tmp_path / "chat")
    generator = Generator(model_dir)
    template = "Tag: {title}\n{description}"
    cfg = smoke_cfg_factory(
        "task=causal_lm",
        "data.text_fields=[title,description]",
        f"data.prompt_template={template}",
        "data.max_length=40",
    )
    rows = pd.DataFrame(
        {
            "title": ["graph networks", "object detection", None, "long", "segmentation"],
            "description": ["on molecules", "in video", None, "words " * 60, ""],
        }
    )
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "answers"
    answered, quarantined = predict_files(cfg, model_dir, str(tmp_path / "rows.csv"), out)

    got = pq.read_table(out).to_pandas()  # the quarantine beside it is not read as predictions
    assert answered == len(got) == 3 and quarantined == {"missing_field": 1, "too_many_tokens": 1}
    assert sorted(got["title"]) == ["graph networks", "object detection", "segmentation"]
    for _, row in got.iterrows():  # batched and sorted by length, each reply is the one it gets alone
        messages = json.loads(row["messages"])
        description = "" if pd.isna(row["description"]) else row["description"]
        prompt = template.format(title=row["title"], description=description).strip()
        assert messages == [{"role": "user", "content": prompt}]
        assert row["generation"] == _alone(generator, messages)
        assert 1 <= row["completion_tokens"] <= 3 and row["prompt_tokens"] > 0
        assert row["finish_reason"] in ("stop", "length")
    kept = pq.read_table(out / QUARANTINE_DIR).to_pandas()
    assert sorted(kept["reason"]) == ["missing_field", "too_many_tokens"]
    assert "data.max_length=40" in kept.loc[kept["reason"] == "too_many_tokens", "detail"].item()

    conversations = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tag: graph networks"}],
        [{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Tag: drones"}],
        [{"role": "tool", "content": "{}"}],
    ]
    pd.DataFrame({"messages": conversations}).to_json(tmp_path / "chats.jsonl", orient="records", lines=True)
    cfg = smoke_cfg_factory("task=causal_lm", "data.text_fields=[messages]", "data.label_field=messages")
    answered, quarantined = predict_files(cfg, model_dir, str(tmp_path / "chats.jsonl"), tmp_path / "chats")
    assert answered == 1 and quarantined == {"template_refused": 1, "unknown_role": 1}
    got = pq.read_table(tmp_path / "chats").to_pandas()
    assert got["generation"].item() == _alone(generator, conversations[0])
    kept = pq.read_table(tmp_path / "chats" / QUARANTINE_DIR).to_pandas()
    refused = kept.loc[kept["reason"] == "template_refused", "detail"].item()
    assert "a conversation opens with the user" in refused
