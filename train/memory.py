"""A worker's peak memory, for the run's metrics: what a model, its strategy (ddp or fsdp) and
LoRA really cost, measured rather than estimated."""

from __future__ import annotations

import resource
import sys

import torch


def peak_memory_mb(device: torch.device) -> float:
    """On a GPU the most CUDA memory torch has allocated; on a CPU the process's peak resident
    set (which includes the Python runtime and libraries, ~0.5-1 GB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
