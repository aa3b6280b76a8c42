"""The frozen reference a preference loss (DPO) measures the policy against: the model training
started from. The training loop hands every target one (`settings["reference"]`); only a target
whose loss compares with it calls it, so the others pay nothing.

Under LoRA the reference is free: the same model with its adapters switched off is the base.
Otherwise it is a second, frozen copy of the base, loaded from `model.name_or_path` on the first
call (with the seed the policy was built with, so a randomly initialised base is the same too)
and, under FSDP, sharded as the policy is. Loading it again rather than copying the policy keeps
a resumed run's reference the base, not the checkpoint it resumed from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from raylane.train import sharding


class Reference:
    def __init__(self, policy: nn.Module, lora_on: bool, load: Callable[[], nn.Module], seed: int):
        self.policy, self.lora_on, self.load, self.seed = policy, lora_on, load, seed
        self.copy: nn.Module | None = None

    def __call__(self, forward) -> torch.Tensor:
        """The reference's logits on the batch `forward` runs a model on (no gradient)."""
        with torch.no_grad():
            if self.lora_on:
                with sharding.unwrapped(self.policy).disable_adapter():
                    return forward()
            return forward(self._copy())

    def _copy(self) -> nn.Module:
        if self.copy is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self.copy = self.load().eval().requires_grad_(False)
        return self.copy
