"""Open a source (path, glob or URI of CSV/TSV/JSONL/Parquet shards) as a Ray Dataset.

Shared by ingest (training data) and batch prediction (data to score)."""

from __future__ import annotations

import glob
from pathlib import Path

from raylane.config import REMOTE_SCHEMES, DataConfig, resolve_input

_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


class IngestError(ValueError):
    """A whole-source problem (no files, missing column): fails the stage, naming the file."""


def expand(source: str) -> list[str]:
    """Local globs expand here so an empty match fails now, not inside a Ray task."""
    if source.startswith(REMOTE_SCHEMES):
        return [source]
    paths = sorted(glob.glob(resolve_input(source)))
    if not paths:
        raise IngestError(f"no file matches '{source}'")
    return paths


def detect_format(paths: list[str], fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(paths[0].rstrip("/")).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise IngestError(f"cannot tell the format of '{paths[0]}'; set data.format")
    return _EXTENSIONS[suffix]


def read_source(source: str, data: DataConfig, required: list[str] | None = None):
    """Open the source lazily; CSV columns in `required` (default: text fields and label) are read as strings."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    paths = expand(source)
    fmt = detect_format(paths, data.format)
    if fmt in ("csv", "tsv"):
        columns = required if required is not None else [*data.text_fields, data.label_field]
        return ray.data.read_csv(
            paths,
            # Descriptions hold quoted newlines; labels like "0"/"1" must stay strings.
            parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, strings_can_be_null=True
            ),
        )
    if fmt == "jsonl":
        return ray.data.read_json(paths, lines=True)
    return ray.data.read_parquet(paths)


def check_columns(ds, source: str, data: DataConfig) -> None:
    names = set(ds.schema().names)
    for column in (*data.text_fields, data.label_field):
        if column not in names:
            raise IngestError(f"{source}: required column '{column}' is missing (found: {sorted(names)})")
