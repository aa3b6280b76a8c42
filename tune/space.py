"""The YAML search space (`sweep.space`) as Ray Tune sampling objects."""

from __future__ import annotations

from typing import Any

from raylane.config import SearchDim


def to_param_space(space: dict[str, SearchDim]) -> dict[str, Any]:
    from ray import tune

    samplers = {
        "loguniform": lambda dim: tune.loguniform(dim.low, dim.high),
        "uniform": lambda dim: tune.uniform(dim.low, dim.high),
        "randint": lambda dim: tune.randint(int(dim.low), int(dim.high)),
        "grid": lambda dim: tune.grid_search(list(dim.values)),
        "choice": lambda dim: tune.choice(list(dim.values)),
    }
    return {name: samplers[dim.kind](dim) for name, dim in space.items()}
