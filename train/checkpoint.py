"""What a training checkpoint holds, and how it comes back.

Layout: `model/` is a complete `save_pretrained` directory (weights, config with the label map,
tokenizer), so the best checkpoint *is* the exported model; `train_state.pt` adds what resuming
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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    directory: Path,
    model,
    tokenizer,
    optimizer,
    scheduler,
    epoch: int,
    scaler=None,
    early_stopping: dict[str, Any] | None = None,
) -> None:
    model.save_pretrained(directory / MODEL_DIR)
    tokenizer.save_pretrained(directory / MODEL_DIR)
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
    # Our own file: it holds numpy RNG state, which the weights-only loader refuses.
    return torch.load(directory / STATE_FILE, weights_only=False)
