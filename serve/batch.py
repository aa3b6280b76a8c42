"""Batch prediction: score files (path, glob or URI) with Ray Data actor pools, write Parquet."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pandas as pd
import ray.data

from raylane.config import PipelineConfig
from raylane.predictor import ScoreBatch
from raylane.runtime import on_this_node
from raylane.sources import read_source
from raylane.text import join_text


def _to_text(batch: pd.DataFrame, text_fields: list[str]) -> pd.DataFrame:
    """Build the text exactly as ingest did; rows missing a field score on what they have."""
    records = batch.to_dict(orient="records")
    batch = batch.copy()
    batch["text"] = [join_text([row.get(f) for f in text_fields]) for row in records]
    return batch


def predict_files(cfg: PipelineConfig, model_dir: str, source: str, out_dir: Path) -> int:
    """Score `source` into Parquet under `out_dir`, replacing what an earlier run left there: the
    predictions are written beside it first and swapped in once complete."""
    ds = read_source(source, cfg.data, required=cfg.data.text_fields)
    scored = ds.map_batches(
        _to_text, batch_format="pandas", fn_kwargs={"text_fields": cfg.data.text_fields}
    ).map_batches(
        ScoreBatch,
        batch_format="pandas",
        batch_size=64,
        compute=ray.data.ActorPoolStrategy(size=cfg.resources.predict_actors),
        fn_constructor_kwargs={"model_dir": model_dir, "raw_text": True},
        **on_this_node(),
    )
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    scored.write_parquet(str(staging))
    rows = ray.data.read_parquet(str(staging)).count()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return rows
