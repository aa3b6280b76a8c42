"""The YAML search space (`sweep.space`) as Ray Tune sampling objects."""

from __future__ import annotations

from typing import Any

from raylane.config import SearchDim


def to_param_space(space: dict[str, SearchDim]) -> dict[str, Any]:
    from ray import tune

    def one(dim: SearchDim):
        if dim.kind == "loguniform":
            return tune.loguniform(dim.low, dim.high)
        if dim.kind == "uniform":
            return tune.uniform(dim.low, dim.high)
        if dim.kind == "randint":
            return tune.randint(int(dim.low), int(dim.high))
        if dim.kind == "grid":
            return tune.grid_search(list(dim.values))
        return tune.choice(list(dim.values))

    return {name: one(dim) for name, dim in space.items()}
