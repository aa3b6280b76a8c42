"""Batch prediction: files (path, glob or URI) through Ray Data actor pools into Parquet. A
scoring model's text tasks build the text from `data.text_fields` as ingest does; image tasks read
an image folder, or a column (`data.image_field`) of image bytes, paths or data: URIs. A chat
model generates a reply per row (`raylane.serve.generate_files`)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pandas as pd
import ray.data

from raylane.config import ConfigError, PipelineConfig
from raylane.predictor import ScoreBatch
from raylane.runtime import on_this_node
from raylane.serve.generate_files import generate_files
from raylane.sources import list_files, read_source
from raylane.tasks import get_task
from raylane.tasks.engine import GENERATING, SCORING
from raylane.text import join_text


def _to_text(batch: pd.DataFrame, text_fields: list[str]) -> pd.DataFrame:
    """Build the text exactly as ingest did; rows missing a field score on what they have."""
    records = batch.to_dict(orient="records")
    batch = batch.copy()
    batch["text"] = [join_text([row.get(f) for f in text_fields]) for row in records]
    return batch


def _image_column(batch: pd.DataFrame, field: str, source: str) -> pd.DataFrame:
    """The `image` column the model reads: bytes as they are; a path (relative to the source) or
    a data: URI read. An unreadable one fails the job, naming it."""
    from raylane.tasks.image import read_image_bytes

    images = []
    for value in batch[field]:
        if isinstance(value, dict):  # Hugging Face datasets' {"bytes", "path"} image struct
            value = value.get("bytes") or value.get("path")
        if isinstance(value, bytes | bytearray):
            images.append(bytes(value))
            continue
        data, problem = read_image_bytes(str(value), source)
        if data is None:
            raise ValueError(f"{source}: image {str(value)[:80]!r}: {problem}")
        images.append(data)
    return batch.assign(image=images)


def _as_image(batch: pd.DataFrame) -> pd.DataFrame:
    return batch.rename(columns={"bytes": "image"})


def _inputs(cfg: PipelineConfig, source: str):
    """The rows to score, with the column the task's model reads (`text` or `image`)."""
    return READERS[get_task(cfg.task).inputs.modality](cfg, source)


def _texts(cfg: PipelineConfig, source: str):
    ds = read_source(source, cfg.data, required=cfg.data.text_fields)
    return ds.map_batches(_to_text, batch_format="pandas", fn_kwargs={"text_fields": cfg.data.text_fields})


def _images(cfg: PipelineConfig, source: str):
    files = list_files(source, cfg.data.format)
    if files[0].format == "image":  # an image folder: each file is a row, its path kept
        ds = ray.data.read_binary_files([f.path for f in files], filesystem=files[0].fs, include_paths=True)
        return ds.map_batches(_as_image, batch_format="pandas")
    ds = read_source(source, cfg.data, required=[])
    return ds.map_batches(
        _image_column, batch_format="pandas", fn_kwargs={"field": cfg.data.image_field, "source": source}
    )


READERS = {"text": _texts, "image": _images}  # by the inputs' modality


# Written into every predictions directory: `predict --output` replaces a directory that carries
# it and no other, so that a mistyped `--output ~/work` does not delete a home folder. A dot name:
# pyarrow, pandas and Ray Data skip it when they read the Parquet files beside it.
MARKER = ".raylane-predictions"


def check_output_dir(out_dir: Path, overwrite: bool = False) -> None:
    """Fail, naming `out_dir`, unless predictions may be written there: it is absent, empty, or a
    directory raylane wrote (it carries MARKER); `overwrite` replaces any directory."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ConfigError("", f"--output {out_dir}: is a link or a file, not a directory; choose another --output")
    if not out_dir.exists() or overwrite or (out_dir / MARKER).is_file() or not any(out_dir.iterdir()):
        return
    raise ConfigError(
        "",
        f"--output {out_dir}: the directory holds files that raylane predict did not write (no {MARKER} "
        "in it), and writing predictions there would delete them; choose another --output, or pass "
        "--overwrite to replace it",
    )


def _score_files(cfg: PipelineConfig, model_dir: str, source: str, staging: Path) -> tuple[int, dict[str, int]]:
    """Score every row of `source` into Parquet under `staging`: (rows, {} quarantined: none, a
    scoring model answers any text or readable image)."""
    scored = _inputs(cfg, source).map_batches(
        ScoreBatch,
        batch_format="pandas",
        batch_size=64,
        compute=ray.data.ActorPoolStrategy(size=cfg.resources.predict_actors),
        fn_constructor_kwargs={"model_dir": model_dir, "raw_text": True},
        **on_this_node(),
    )
    scored.write_parquet(str(staging))
    return ray.data.read_parquet(str(staging)).count(), {}


# By the task's engine: a scoring model scores rows, a generating model writes a reply to each.
WRITERS = {SCORING.name: _score_files, GENERATING.name: generate_files}


def predict_files(
    cfg: PipelineConfig, model_dir: str, source: str, out_dir: Path, overwrite: bool = False
) -> tuple[int, dict[str, int]]:
    """Predict for `source` into Parquet under `out_dir`, replacing what an earlier run left there
    (only a directory raylane wrote, unless `overwrite`): the predictions are written beside it
    first and swapped in once complete. Returns (rows written, rows quarantined by reason)."""
    check_output_dir(out_dir, overwrite)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    rows, quarantined = WRITERS[get_task(cfg.task).engine.name](cfg, model_dir, source, staging)
    (staging / MARKER).write_text("written by `raylane predict`, which may replace this directory\n")
    check_output_dir(out_dir, overwrite)  # again: predicting took a while, and the directory may be new
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return rows, quarantined
