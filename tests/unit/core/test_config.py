import subprocess
import sys
import time

import pytest

from raylane.config import (
    ConfigError,
    PipelineConfig,
    SearchDim,
    check_data_inputs,
    check_model_input,
    describe,
    load_config,
)
from tests.paths import REPO_ROOT


def test_default_config_loads_with_the_embedded_data():
    cfg = load_config()
    assert cfg.data.source == "data/made-with-ml/dataset.csv"
    assert cfg.data.test_source == "data/made-with-ml/holdout.csv"
    assert cfg.data.text_fields == ["title", "description"]
    check_data_inputs(cfg)  # the embedded sample ships in the checkout
    check_model_input(cfg)


def test_an_override_that_is_not_yaml_is_its_text():
    """A prompt template on two lines, with colons, given on the command line."""
    template = "Tag it.\nTitle: {title}\nDescription: {description}"
    cfg = load_config("configs/llm-sft.yaml", [f"data.prompt_template={template}"])
    assert cfg.data.prompt_template == template
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=3e-5\nb: c"])


def test_dotted_overrides_are_typed():
    cfg = load_config(None, ["train.lr=3e-5", "train.epochs=2", "sweep.enabled=false", "data.text_fields=[a, b]"])
    assert cfg.train.lr == pytest.approx(3e-5) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 2
    assert cfg.sweep.enabled is False
    assert cfg.data.text_fields == ["a", "b"]


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lrr=1", "train.lrr"),
        ("nonsense=1", "nonsense"),
        ("train.epochs=two", "train.epochs"),
        ("train.epochs=1.5", "train.epochs"),
        ("sweep.enabled=maybe", "sweep.enabled"),
        ("sweep.scheduler=hyperband", "sweep.scheduler"),
        ("data.val_fraction=0.9", "data.val_fraction"),
        ("data.text_fields=title", "data.text_fields"),
        ("sweep.space.warmup={kind: uniform, low: 0.2, high: 0.1}", "sweep.space.warmup.high"),
        ("sweep.space.not_a_key={kind: choice, values: [1]}", "sweep.space.not_a_key"),
        ("serve.port=70000", "serve.port"),
        ("train", "train"),
        ("sweep.search=bayes", "sweep.search"),
        ("sweep.name=a/b", "sweep.name"),
        # Optuna samples, it cannot walk a grid: caught at load, naming the dimension.
        (("sweep.search=optuna", "sweep.space.lr={kind: grid, values: [1.0e-4, 2.0e-4]}"), "sweep.space.lr"),
        ("evaluate.slices=[{name: short}]", "evaluate.slices[0].contains"),
        ("evaluate.slices=[{name: s, max_words: 5}, {name: s, contains: x}]", "evaluate.slices"),
        ("evaluate.slices=[{name: s, max_words: -1}]", "evaluate.slices[0].max_words"),
        ("gate.min_class_f1=1.5", "gate.min_class_f1"),
        ("gate.alias=previous", "gate.alias"),
        (("serve.num_replicas=3", "serve.max_replicas=2"), "serve.max_replicas"),
        ("serve.quantize=int4", "serve.quantize"),
        ("serve.prune_amount=1.0", "serve.prune_amount"),
        ("serve.max_batch_size=0", "serve.max_batch_size"),
        ("serve.replica_cpus=0", "serve.replica_cpus"),
        # Files read as they are: a headerless file needs names, names need a headerless file.
        ("data.header=false", "data.columns"),
        ("data.columns=[label, text]", "data.columns"),
        (("data.header=false", "data.columns=[a, a]"), "data.columns"),
        ("data.quoting=sometimes", "data.quoting"),
        ("data.encoding=klingon", "data.encoding"),
        ("data.max_quarantine_fraction=1.5", "data.max_quarantine_fraction"),
        ("data.max_record_lines=0", "data.max_record_lines"),
        # Safe serving defaults: no open port without keys, no feedback without a signing secret.
        ("serve.host=0.0.0.0", "serve.host"),
        ("serve.feedback=true", "serve.feedback_secret_env"),
        ("serve.max_request_bytes=10", "serve.max_request_bytes"),
        # Large models: settings that make no sense together fail before Ray starts.
        (("train.strategy=fsdp", "resources.num_workers=1"), "train.strategy"),
        (("train.cpu_offload=true", "resources.use_gpu=true"), "train.cpu_offload"),
        (("train.strategy=fsdp", "resources.num_workers=2", "train.cpu_offload=true"), "train.cpu_offload"),
        (("train.strategy=fsdp", "resources.num_workers=2", "train.precision=fp16"), "train.precision"),
        ("train.peft_export=adapter", "train.peft_export"),
        (("train.peft=lora", "model.init=config"), "train.peft"),
        (("train.peft=lora", "train.lora.r=0"), "train.lora.r"),
        (("train.peft=lora", "train.lora.dropout=1"), "train.lora.dropout"),
        # Chat models (causal_lm): their keys elsewhere, and bad generation settings.
        ("gate.min_exact_match=0.5", "gate.min_exact_match"),
        ("data.prompt_template='Q: {title}'", "data.prompt_template"),
        ("train.packing=true", "train.packing"),  # conversations pack; a classifier's rows do not
        ("evaluate.temperature=3", "evaluate.temperature"),
        ("evaluate.extract=regex", "evaluate.regex"),
        ("evaluate.regex='('", "evaluate.regex"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override] if isinstance(override, str) else list(override))
    assert err.value.key == key
    assert key in str(err.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.prompt_template='Q: {question}'", "data.prompt_template"),
        ("data.prompt_template='Q: {title'", "data.prompt_template"),
        ("serve.quantize=int8", "serve.quantize"),
        ("train.metric=val_accuracy", "train.metric"),
        ("gate.min_weighted_f1=0.5", "gate.min_weighted_f1"),
        ("evaluate.slices=[{name: s, max_words: 5}]", "evaluate.slices"),
        ("evaluate.max_new_tokens=0", "evaluate.max_new_tokens"),
        ("evaluate.top_p=0", "evaluate.top_p"),
    ],
)
def test_bad_chat_model_settings_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(REPO_ROOT / "configs" / "llm-sft.yaml", [override])
    assert err.value.key == key


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        load_config(None, ["train.epoch=3"])


def test_missing_files_are_named(tmp_path):
    cfg = load_config(None, [f"data.source={tmp_path}/none-*.csv"])
    with pytest.raises(ConfigError) as err:
        check_data_inputs(cfg)
    assert err.value.key == "data.source"
    cfg = load_config(None, [f"model.name_or_path={tmp_path}/no-model"])
    with pytest.raises(ConfigError) as err:
        check_model_input(cfg)
    assert err.value.key == "model.name_or_path"
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_search_dims_validate():
    assert SearchDim(kind="loguniform", low=1e-5, high=1e-3).low == 1e-5
    with pytest.raises(ConfigError):
        SearchDim(kind="loguniform", low=0.0, high=1.0)
    with pytest.raises(ConfigError):
        SearchDim(kind="choice", values=[])


def test_help_documents_every_key():
    text = "\n".join(describe())
    for key in PipelineConfig().flat():
        section_key = key.split(".")[:2]
        assert ".".join(section_key) in text


# For `ray job submit --runtime-env` and `serve deploy` (see test_cluster_config), and Ray Data's
# logging on a quiet console (raylane.console).
NOT_PIPELINE_CONFIGS = {"job_runtime_env.yaml", "serve.yaml", "ray_data_logging.yaml"}


def test_every_shipped_config_starts_with_its_command_and_loads(monkeypatch):
    monkeypatch.setenv("RAYLANE_STORAGE", "s3://bucket/raylane")  # what cluster.yaml exports on the nodes
    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        if path.name in NOT_PIPELINE_CONFIGS:
            continue
        lines = path.read_text().splitlines()
        command = " ".join(line for line in lines[:3] if line.startswith("#"))
        assert lines[0].startswith(("# python -m raylane ", "# ray job submit ")), path
        assert "python -m raylane" in command and f"--config configs/{path.name}" in command, path
        load_config(path)


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.lrr=1"],
        ["data.source=does/not/exist.csv"],
        # Checked on a weightless copy of the default model (built on the meta device).
        ["train.peft=lora", "train.lora.target_modules=[query, q_proj]"],
        # The default encoder's tokenizer has no chat template to render conversations with.
        ["--config", "configs/llm-sft.yaml", "model.name_or_path=sentence-transformers/all-MiniLM-L6-v2"],
    ],
)
def test_cli_fails_in_seconds_before_ray_starts(overrides):
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "raylane", "run", *overrides], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    elapsed = time.time() - started
    assert proc.returncode == 2, proc.stderr
    assert overrides[-1].split("=")[0] in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
    assert elapsed < 15, f"bad config took {elapsed:.1f}s to fail"


def test_environment_variables_fill_values(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYLANE_TEST_BUCKET", "s3://bucket/x")
    monkeypatch.delenv("RAYLANE_TEST_UNSET", raising=False)
    cfg = load_config(
        None,
        [
            "train.storage_path=${RAYLANE_TEST_BUCKET}/checkpoints",
            "tracking.experiment=${RAYLANE_TEST_UNSET:-fallback}",
        ],
    )
    assert cfg.train.storage_path == "s3://bucket/x/checkpoints"
    assert cfg.tracking.experiment == "fallback"
    nested = load_config(None, ["data.output_uri=${RAYLANE_TEST_UNSET:-${RAYLANE_TEST_BUCKET}/data}"])
    assert nested.data.output_uri == "s3://bucket/x/data"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.output_uri=${RAYLANE_TEST_UNSET}/dataset"])
    assert err.value.key == "data.output_uri" and "RAYLANE_TEST_UNSET is not set" in str(err.value)


def test_a_variable_is_expanded_once_its_value_is_taken_as_it_is(monkeypatch):
    # A value that happens to hold "${...}" must not pull in other variables (a secret, say).
    monkeypatch.setenv("RAYLANE_TEST_SECRET", "hunter2")
    monkeypatch.setenv("RAYLANE_TEST_INNOCENT", "prefix-${RAYLANE_TEST_SECRET}")
    cfg = load_config(None, ["tracking.experiment=${RAYLANE_TEST_INNOCENT}"])
    assert cfg.tracking.experiment == "prefix-${RAYLANE_TEST_SECRET}"
    # An unused default is not looked up: its own unset variable is no error.
    monkeypatch.setenv("RAYLANE_TEST_SET", "given")
    assert load_config(None, ["tracking.experiment=${RAYLANE_TEST_SET:-${RAYLANE_TEST_NOPE}}"]).tracking.experiment == (
        "given"
    )
    with pytest.raises(ConfigError, match="unclosed"):
        load_config(None, ["tracking.experiment=${RAYLANE_TEST_NOPE:-open"])


def test_keys_on_a_public_host_or_an_explicit_opt_out(monkeypatch):
    assert load_config(None, ["serve.host=0.0.0.0", "serve.api_keys_env=SOME_KEYS"]).serve.host == "0.0.0.0"
    assert load_config(None, ["serve.host=0.0.0.0", "serve.allow_unauthenticated=true"]).serve.allow_unauthenticated


def test_train_without_a_dataset_says_so_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "raylane", "train", f"output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "is not a raylane dataset" in proc.stderr and "raylane ingest" in proc.stderr
    assert "Traceback" not in proc.stderr
