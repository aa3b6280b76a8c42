"""What a training checkpoint holds, and how it comes back.

Layout: `model/` is a complete `save_pretrained` directory (weights, config with the label map,
tokenizer or image processor; with LoRA the adapter and the head alone), so the best checkpoint
*is* the exported model; `train_state.pt` adds what resuming needs (optimizer, scheduler, loss
scaler, early-stopping counter, epoch, RNG states).

Under FSDP the resume state is sharded: `shards/` is a `torch.distributed.checkpoint` of the
model and optimizer, each rank writing its own part to its own directory and reporting it to
Ray Train, which merges the parts in storage. `model/` is still whole: rank 0 gathers it.

Whoever can write to the checkpoint bucket must not be able to run code in every worker that
resumes from it. Resuming unpickles nothing it does not know: `train_state.pt` and the shards'
tensors and values are read with `weights_only=True`, and the shards' `.metadata` (which torch
itself reads with plain `pickle.load`) through an unpickler that builds only DCP's own metadata
classes. The weights in `model/` are safetensors. This keeps code out, not tampering: someone
who can write the bucket can still change the weights or the optimizer state they hold.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODEL_DIR = "model"
STATE_FILE = "train_state.pt"
SHARDS_DIR = "shards"


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors, lists and numbers only: what `torch.load` reads with
    `weights_only=True`, which runs no code from the file."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    directory: Path,
    model,
    processor,
    optimizer,
    scheduler,
    epoch: int,
    scaler=None,
    early_stopping: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """`state_dict`: the model's weights gathered from its shards (FSDP), else the model's own;
    `optimizer` None when its state is in the shards."""
    model.save_pretrained(directory / MODEL_DIR, state_dict=state_dict)
    processor.save_pretrained(directory / MODEL_DIR)  # the tokenizer, or the image processor
    torch.save(
        {
            "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "rng": rng_state(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "early_stopping": early_stopping or {},
        },
        directory / STATE_FILE,
    )


def load_state(directory: Path) -> dict[str, Any]:
    """The resume state, read with `weights_only=True`: tensors, containers and numbers only."""
    return torch.load(directory / STATE_FILE, weights_only=True)


def _frozen_out(lora: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # LoRA: only what trains is saved; the frozen base comes back from model.name_or_path.
    return StateDictOptions(ignore_frozen_params=lora, strict=not lora)


def gathered_weights(model, lora: bool) -> dict[str, torch.Tensor]:
    """The sharded model's weights, whole, on rank 0's CPU (empty elsewhere). Every rank calls it:
    gathering is collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=lora)
    return get_model_state_dict(model, options=options)


def save_shards(directory: Path, model, optimizer, lora: bool) -> None:
    """This rank's part of the model and optimizer state (every rank calls it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer, options=_frozen_out(lora))
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(directory / SHARDS_DIR))


class UntrustedCheckpoint(pickle.UnpicklingError):
    """A checkpoint holds something other than data: it is refused before anything in it runs."""


# What torch 2.13's FileSystemWriter pickles into `shards/.metadata` (measured on a single-process
# save and on a 2-rank FSDP2 save of model and optimizer): DCP's dataclasses, torch.Size, dtypes,
# a layout looked up by name, and the checkpoint's path. Every one of them, called with any
# arguments, only builds a value. A torch release that pickles a new class fails closed, naming it.
_DCP = "torch.distributed.checkpoint"
_METADATA_CLASSES = {
    *(
        (f"{_DCP}.metadata", name)
        for name in (
            "Metadata",
            "MetadataIndex",
            "StorageMeta",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "TensorProperties",
            "_MEM_FORMAT_ENCODING",
        )
    ),
    (f"{_DCP}.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata classes and nothing else. Chosen over an HMAC over the checkpoint
    files: it protects every checkpoint by default, with no key to distribute to the workers or to
    lose, and it adds no pass over gigabytes of shards; an HMAC would also catch tampered weights,
    which this does not claim to."""

    def __init__(self, file, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) in _METADATA_CLASSES:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UntrustedCheckpoint(
            f"{self.where} refers to {module}.{name}, which is not part of a checkpoint's metadata: "
            "refusing to unpickle it (a checkpoint is data; building that could run code)"
        )


def _data_only_reader(path: str):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    class DataOnlyReader(FileSystemReader):
        """torch's reader, with `.metadata` read by `_MetadataUnpickler` instead of `pickle.load`."""

        def read_metadata(self, *args, **kwargs) -> Metadata:
            path = self._get_metadata_path(kwargs.get("rank"))
            with self.fs.create_stream(path, "rb") as stream:
                metadata = _MetadataUnpickler(stream, str(path)).load()
            if not isinstance(metadata, Metadata):
                raise UntrustedCheckpoint(f"{path} holds a {type(metadata).__name__}, not checkpoint metadata")
            if metadata.storage_meta is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return DataOnlyReader(path)


def _data_only_planner():
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element  # what DefaultLoadPlanner uses

    class DataOnlyPlanner(DefaultLoadPlanner):
        """torch's planner, with the non-tensor values (the optimizer's param groups) read with
        `weights_only=True`: its own `load_bytes` unpickles them with `weights_only=False`."""

        def load_bytes(self, read_item, value) -> None:
            fqn = read_item.dest_index.fqn
            try:
                loaded = torch.load(value, weights_only=True)
            except pickle.UnpicklingError as err:
                raise UntrustedCheckpoint(f"checkpoint value {fqn} is not plain data: refusing to load it") from err
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[fqn], loaded)
            else:
                self.state_dict[fqn] = loaded

    return DataOnlyPlanner()


def load_sharded_state(shards: Path, state: dict[str, Any]) -> None:
    """`dcp.load` of `shards` into `state`, unpickling only data. The metadata is read once before
    the load so that a refusal surfaces as itself: inside `dcp.load` a failed read is logged as
    "metadata is not found" and a failed value comes back wrapped in a `CheckpointException`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    _data_only_reader(str(shards)).read_metadata()
    try:
        dcp.load(state, storage_reader=_data_only_reader(str(shards)), planner=_data_only_planner())
    except CheckpointException as err:
        refused = [exc for exc, _ in err.failures.values() if isinstance(exc, UntrustedCheckpoint)]
        if refused:
            raise refused[0] from err
        raise


def load_shards(directory: Path, model, optimizer, lora: bool) -> None:
    """Each rank reads its part back into the sharded model and optimizer."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    options = _frozen_out(lora)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    state = {"model": model_state, "optimizer": optimizer_state}
    load_sharded_state(directory / SHARDS_DIR, state)
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=options
    )
