"""The task seam holds: each task accepts the config keys it owns and refuses the others, naming
the key; every engine has its implementation in every stage that differs by engine; a saved
model loads by its engine; and no stage outside `raylane/tasks/` asks which task it runs."""

import re

import pytest

from raylane.config import ConfigError, load_config
from raylane.config.tasks import task_specific_keys
from raylane.tasks import ENGINES, TASKS, get_task
from raylane.tasks.saved import SavedTask
from tests.paths import REPO_ROOT

SHIPPED = {
    "text_classification": "configs/default.yaml",
    "text_multilabel": "configs/text-multilabel.yaml",
    "text_regression": "configs/text-regression.yaml",
    "image_classification": "configs/digits.yaml",
    "causal_lm": "configs/llm-sft.yaml",
    "preference": "configs/llm-dpo.yaml",
}
# A value other than the default for each task-specific key, with what the key needs beside it.
SETTINGS = {
    "data.labels": ["data.labels=[a,b]"],
    "data.stratify": ["data.stratify=true"],
    "data.label_separator": ["data.label_separator=;"],
    "data.prompt_template": ["data.prompt_template='Say: {title}'", "data.text_fields=[title]"],
    "evaluate.slices": ["evaluate.slices=[{name: short, max_words: 5}]"],
    "gate.min_weighted_f1": ["gate.min_weighted_f1=0.5"],
    "gate.min_class_f1": ["gate.min_class_f1=0.1"],
    "gate.min_micro_f1": ["gate.min_micro_f1=0.5"],
    "gate.max_rmse": ["gate.max_rmse=3"],
    "gate.min_exact_match": ["gate.min_exact_match=0.5"],
    "gate.max_perplexity": ["gate.max_perplexity=100"],
    "serve.feedback": ["serve.feedback=true", "serve.feedback_secret_env=RAYLANE_FEEDBACK_SECRET"],
    "data.feedback_source": ["data.feedback_source=outputs/feedback"],
    "serve.quantize": ["serve.quantize=int8"],
    "serve.prune_amount": ["serve.prune_amount=0.5"],
    "train.loss": ["train.loss=huber"],
    "train.distill": ["train.distill.teacher=models:/raylane-classifier@champion"],
    "gate.max_teacher_gap": ["gate.max_teacher_gap=0.01"],
    "train.packing": ["train.packing=true"],
    "data.rejected_field": ["data.rejected_field=worse"],
    "train.dpo": ["train.dpo.beta=0.5"],
    "gate.min_preference_accuracy": ["gate.min_preference_accuracy=0.6"],
}


def test_every_task_specific_key_has_a_setting_here():
    assert set(SETTINGS) == task_specific_keys()


@pytest.mark.parametrize("task", list(SHIPPED))
@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_a_task_takes_the_keys_it_owns_and_refuses_the_rest_by_name(task, key, tmp_path):
    overrides = [f"output_dir={tmp_path}", *SETTINGS[key]]
    if key in get_task(task).config_keys:
        cfg = load_config(REPO_ROOT / SHIPPED[task], overrides)
        assert cfg.task == task
        return
    with pytest.raises(ConfigError) as refused:
        load_config(REPO_ROOT / SHIPPED[task], overrides)
    assert refused.value.key == key
    assert f"the task is {task}" in str(refused.value)
    owners = [name for name, t in TASKS.items() if key in t.config_keys]
    assert all(owner in str(refused.value) for owner in owners)


def test_every_engine_has_its_implementation_in_each_stage_that_differs():
    from raylane.evaluate.stage import EVALUATIONS
    from raylane.loader import LOADERS
    from raylane.pipelines.commands import FIRST_REQUESTS
    from raylane.serve.app import APPS
    from raylane.train.records import RECORDS

    for table in (LOADERS, RECORDS, EVALUATIONS, APPS, FIRST_REQUESTS):
        assert set(table) == set(ENGINES)
    assert {t.engine.name for t in TASKS.values()} == set(ENGINES)  # each engine serves some task


def test_a_saved_model_loads_by_its_engine(tmp_path, tiny_model, tiny_causal_lm):
    import shutil

    from raylane.generate import Generator
    from raylane.loader import load_model
    from raylane.models import load_classifier, load_tokenizer
    from raylane.predictor import Predictor

    scorer, chat = tmp_path / "scorer", tmp_path / "chat"
    load_classifier(str(tiny_model), ["a", "b"]).save_pretrained(scorer)
    load_tokenizer(str(tiny_model)).save_pretrained(scorer)
    SavedTask("text_classification", ["a", "b"]).write(scorer)
    shutil.copytree(tiny_causal_lm, chat)
    SavedTask("causal_lm", []).write(chat)

    assert isinstance(load_model(str(scorer)), Predictor)
    assert isinstance(load_model(str(chat), threads=1), Generator)
    with pytest.raises(ValueError, match="is a causal_lm model; this deployment serves text_classification"):
        load_model(str(chat), serves="text_classification")
    with pytest.raises(ValueError, match="no compressed variant"):
        load_model(str(chat), quantize="int8")
    # A chat model and its preference-tuned successor answer alike: each one's deployment serves the other.
    tuned = tmp_path / "tuned"
    shutil.copytree(chat, tuned)
    SavedTask("preference", []).write(tuned)
    assert isinstance(load_model(str(chat), serves="preference", threads=1), Generator)
    assert isinstance(load_model(str(tuned), serves="causal_lm", threads=1), Generator)
    with pytest.raises(ValueError, match="is a preference model; this deployment serves text_classification"):
        load_model(str(tuned), serves="text_classification")


# What a stage would write to ask which task it runs: a flag of one kind of model, or a comparison
# with a task's or a half's name.
_NAMES = "|".join(
    sorted({*TASKS, "single_label", "multi_label", "numeric", "generation", "text", "image", "chat"}, key=len)
)
_ASKS = re.compile(
    r"keeps_outputs|has_label_set|calibrated_on_val|stratifiable|free_text|\.unit\b"
    rf"|\b(task|kind|column|modality)\s*(==|!=|not in|in)\s*\(?\s*[\"'](?:{_NAMES})[\"']"
)
STAGES = ("raylane", "ingest", "train", "tune", "evaluate", "serve", "pipelines")


def test_no_stage_outside_the_seam_asks_which_task_it_runs():
    offenders = []
    for folder in STAGES:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if "tasks" in path.relative_to(REPO_ROOT).parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _ASKS.search(line):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_pattern_finds_what_it_looks_for():
    for line in (
        'if target.kind == "numeric":',
        "if cfg.task == 'causal_lm':",
        'if inputs.kind in ("text", "chat")',
        'if task.inputs.column == "text":',
        "if not target.keeps_outputs:",
    ):
        assert _ASKS.search(line), line
    assert not _ASKS.search("if saved.task != cfg.task:")
    assert not _ASKS.search('if file.format == "image":')  # a file format, not a task


def test_feedback_agrees_with_an_answer_by_the_target():
    """Live accuracy: the label a person gave against what the model said, for each scoring target
    (a number is neither right nor wrong)."""
    import numpy as np

    labels = ["cv", "nlp", "other"]
    for name in ("text_classification", "image_classification"):
        target = get_task(name).target
        (answer,) = target.answer(np.array([[0.1, 0.8, 0.1]]), labels, {}, top_k=2)
        assert target.agrees(answer, target.check_label("nlp").value) is True
        assert target.agrees(answer, target.check_label("cv").value) is False
    target = get_task("text_multilabel").target
    (answer,) = target.answer(np.array([[0.9, 0.8, 0.1]]), labels, {"thresholds": [0.5] * 3})
    assert target.agrees(answer, target.check_label('["nlp", "cv"]').value) is True
    assert target.agrees(answer, target.check_label('["nlp"]').value) is False
    target = get_task("text_regression").target
    (answer,) = target.answer(np.array([[2.5]]), [], {})
    assert target.agrees(answer, target.check_label("2.5").value) is None
