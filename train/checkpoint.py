"""What a training checkpoint holds, and how it comes back.

Layout: `model/` is a complete `save_pretrained` directory (weights, config with the label map,
tokenizer or image processor), so the best checkpoint *is* the exported model; `train_state.pt` adds what resuming
needs (optimizer, scheduler, loss scaler, early-stopping counter, epoch, RNG states).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODEL_DIR = "model"
STATE_FILE = "train_state.pt"


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
) -> None:
    model.save_pretrained(directory / MODEL_DIR)
    processor.save_pretrained(directory / MODEL_DIR)  # the tokenizer, or the image processor
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
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
