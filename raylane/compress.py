"""Smaller models for CPU inference: int8 dynamic quantization of the Linear layers, and
magnitude pruning. Applied when a model is loaded (a second, no more), so the registry keeps one
fp32 model and each deployment chooses; evaluation measures what the choice costs in accuracy."""

from __future__ import annotations

import warnings

QUANTIZE_MODES = ("none", "int8")


def describe(quantize: str, prune_amount: float) -> str:
    """A short name for the variant: 'fp32', 'int8', 'fp32+pruned30', 'int8+pruned30'."""
    name = "int8" if quantize == "int8" else "fp32"
    return f"{name}+pruned{round(prune_amount * 100)}" if prune_amount > 0 else name


def compress(model, quantize: str = "none", prune_amount: float = 0.0):
    """The model with the smallest `prune_amount` of each Linear layer's weights zeroed (by
    magnitude), then its Linear layers quantized to int8 when `quantize` is "int8". CPU only:
    PyTorch's dynamic quantization has no CUDA kernels."""
    import torch
    from torch.nn.utils import prune

    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, not {quantize!r}")
    if not 0.0 <= prune_amount < 1.0:
        raise ValueError(f"prune_amount must be in [0, 1), not {prune_amount}")
    if prune_amount > 0:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                prune.l1_unstructured(module, "weight", amount=prune_amount)
                prune.remove(module, "weight")  # bake the zeros in; no mask left behind
    if quantize == "int8":
        with warnings.catch_warnings():
            # torch.ao's eager quantization is deprecated in favour of torchao, which is not a
            # dependency; it still works and is what the installed torch ships.
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model.cpu(), {torch.nn.Linear}, dtype=torch.qint8)
    return model
