"""Scoring a split of a dataset with a model directory, in Ray Data actors that each load the
model once; only the small columns come back to the driver (the outputs, the true label, slice
flags), never the texts or images. Evaluation, the champion's re-scoring and the calibration of
a model on the validation split (multi-label thresholds) all score through here."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from raylane.dataset import DatasetInfo
from raylane.runtime import on_this_node


def score_split(
    model_dir: str,
    dataset: DatasetInfo,
    split: str,
    actors: int = 1,
    batch_size: int = 64,
    quantize: str = "none",
    prune_amount: float = 0.0,
    flag: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    keep: tuple[str, ...] = (),
) -> pd.DataFrame:
    """One row per example: `label` (as stored), `outputs` (the model's scores or value), and the
    `keep` columns `flag` adds (slice membership)."""
    import ray.data

    from raylane.predictor import ScoreBatch

    # Read (and flag) first, then score: streamed, the scoring actors can take the last free CPU
    # (a serving app holds the rest) and the read and flag tasks then wait for it forever. The
    # split ends in memory anyway (to_pandas, below).
    ds = dataset.read_split(split)
    if flag is not None:
        ds = ds.map_batches(flag, batch_format="pandas")
    ds = ds.materialize()
    scored = ds.map_batches(
        ScoreBatch,
        batch_format="pandas",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"model_dir": model_dir, "quantize": quantize, "prune_amount": prune_amount},
        **on_this_node(),
    )
    return scored.select_columns(["label", "outputs", *keep]).to_pandas()


def outputs_of(scored: pd.DataFrame) -> np.ndarray:
    """The `outputs` column as one (rows, k) array."""
    return np.stack(scored["outputs"].to_numpy()) if len(scored) else np.zeros((0, 1))


def aligned(outputs: np.ndarray, model_order: list[str], dataset_order: list[str]) -> np.ndarray:
    """The model's per-label outputs reordered into the dataset's label order."""
    if not model_order or model_order == dataset_order:
        return outputs
    if sorted(model_order) != sorted(dataset_order):
        raise ValueError(f"the model predicts {sorted(model_order)}, the dataset has {sorted(dataset_order)}")
    return outputs[:, [model_order.index(name) for name in dataset_order]]
