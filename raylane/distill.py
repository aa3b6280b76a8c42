"""Knowledge distillation's pieces that need no Ray: which teacher a run learns from, checked
before any compute starts, and the student built from the teacher's own layers.

A teacher named by an alias (`models:/<name>@champion`) is pinned to the version the alias points
at when the run starts (`pin_teacher`): every later step (the soft targets, the student's start,
evaluation, lineage) sees that one version, even if the alias moves during the run. Its files are
fetched once into `<output_dir>/teachers`, where Tune's trials and evaluation find them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from raylane.config import PipelineConfig
from raylane.errors import ConfigError

KEY = "train.distill.teacher"


@dataclass(frozen=True)
class Teacher:
    uri: str  # pinned: models:/<name>/<version>, or an absolute model directory
    model_dir: str  # where its files are on this machine
    task: str
    labels: list[str]


def resolve_teacher(cfg: PipelineConfig) -> Teacher:
    """The configured teacher, fetched (once) and read; a ConfigError naming the key when there is
    no such model."""
    from raylane.registry import fetch_configured
    from raylane.tasks.saved import read_saved_task

    resolved = fetch_configured(cfg.train.distill.teacher, KEY, cfg, "teachers")
    pinned = f"models:/{resolved.name}/{resolved.version}" if resolved.name else resolved.model_dir
    saved = read_saved_task(resolved.model_dir)
    return Teacher(pinned, resolved.model_dir, saved.task, saved.labels)


def pin_teacher(cfg: PipelineConfig) -> PipelineConfig:
    """The config with its teacher checked and pinned to one version, and, for a student cut from
    the teacher (`student_layers`), the teacher's directory as the model to start from (its
    tokenizer then tokenizes the data). Fails before Ray starts, naming the key, when the teacher
    is missing, of another task or label set, or has fewer layers than asked for. The teacher
    reads each row's prepared text (or image) with its own processor, so a student of another
    architecture and tokenizer learns from it as well."""
    distill = cfg.train.distill
    teacher = resolve_teacher(cfg)
    if teacher.task != cfg.task:
        raise ConfigError(KEY, f"{teacher.uri} is a {teacher.task} model; this run trains {cfg.task}")
    if cfg.data.labels and sorted(cfg.data.labels) != sorted(teacher.labels):
        raise ConfigError(KEY, f"{teacher.uri} predicts {sorted(teacher.labels)}; data.labels is {cfg.data.labels}")
    model = cfg.model
    if distill.student_layers:
        depth = layer_count(teacher.model_dir)
        too_deep = [i for i in distill.student_layers if i >= depth]
        if too_deep:
            raise ConfigError(
                "train.distill.student_layers", f"the teacher has {depth} layers (0 to {depth - 1}); got {too_deep}"
            )
        model = dataclasses.replace(model, name_or_path=teacher.model_dir, init="pretrained")
    train = dataclasses.replace(cfg.train, distill=dataclasses.replace(distill, teacher=teacher.uri))
    return dataclasses.replace(cfg, model=model, train=train)


def layer_count(model_dir: str) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return int(config.get("num_hidden_layers") or config.get("n_layer") or 0)


def identity(teacher: Teacher, tracking_uri: str) -> str:
    """What names a teacher's soft targets: a registered version of one registry, or a directory's
    weights by content (a directory retrained in place gets new targets)."""
    from raylane.models import file_sha256, model_cache

    if teacher.uri.startswith("models:/"):
        return f"{tracking_uri}|{teacher.uri}"
    # Hashed once per file and kept by path, size and mtime: every Tune trial asks again.
    files = sorted(
        p for p in Path(teacher.model_dir).iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".json")
    )
    cache = model_cache()
    return hashlib.sha256("|".join(f"{p.name}:{file_sha256(p, cache)}" for p in files).encode()).hexdigest()


def keep_layers(model, layers: list[int]):
    """The model with only `layers` of its transformer stack, in that order (DistilBERT's
    initialisation: a student that starts from the teacher's own weights). The config is updated,
    so the saved student loads as a plain model of the smaller depth."""
    import torch

    depth = model.config.num_hidden_layers
    stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth]
    if not stacks:
        raise ValueError(f"no stack of {depth} layers found in {type(model).__name__}")
    stack = stacks[0]
    kept = [stack[i] for i in layers]
    stack._modules.clear()
    for i, layer in enumerate(kept):
        stack.add_module(str(i), layer)
    model.config.num_hidden_layers = len(layers)
    return model
