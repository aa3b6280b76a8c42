"""What a training checkpoint holds, and how it comes back.

Layout: `model/` is a complete `save_pretrained` directory (weights, config with the label map,
tokenizer or image processor; with LoRA the adapter and the head alone), so the best checkpoint
*is* the exported model; `train_state.pt` adds what resuming needs (optimizer, scheduler, loss
scaler, early-stopping counter, epoch, RNG states).

Under FSDP the resume state is sharded: `shards/` is a `torch.distributed.checkpoint` of the
model and optimizer, each rank writing its own part to its own directory and reporting it to
Ray Train, which merges the parts in storage. `model/` is still whole: rank 0 gathers it.
"""

from __future__ import annotations

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
    """The resume state. weights_only: a checkpoint is data, and whoever can write to the
    checkpoint bucket must not be able to run code in every worker that resumes from it."""
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


def load_shards(directory: Path, model, optimizer, lora: bool) -> None:
    """Each rank reads its part back into the sharded model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    options = _frozen_out(lora)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(directory / SHARDS_DIR))
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=options
    )
