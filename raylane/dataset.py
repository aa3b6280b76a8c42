"""A tokenized dataset as stages exchange it: a directory or object-storage URI holding one
Hive-style Parquet partition per split (`split=train/`, ...) plus `manifest.json`, which carries
the counts, the label map and what produced it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
# Columns every tokenized split carries; `text` stays for evaluation slices and error analysis.
COLUMNS = ("text", "label", "input_ids", "length")


@dataclass(frozen=True)
class DatasetInfo:
    uri: str
    manifest: dict[str, Any]

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def digest(self) -> str:
        """What the data is: its sources' digest and the ingest config's (the MLflow dataset digest)."""
        return f"{self.manifest.get('source_digest', '?')}-{self.manifest.get('config_digest', '?')}"

    def split_uri(self, split: str) -> str:
        return join(self.uri, f"split={split}")

    def read_split(self, split: str):
        """The split as a Ray Dataset (lazy: nothing is read until it is consumed)."""
        import ray.data

        # partitioning=None: the directory name must not come back as a `split` column.
        return ray.data.read_parquet(self.split_uri(split), partitioning=None)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def read_manifest(uri: str) -> dict[str, Any] | None:
    from raylane.sources import filesystem

    fs, path = filesystem(join(uri, MANIFEST))
    try:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read())
    except (FileNotFoundError, OSError):
        return None


def open_dataset(uri: str) -> DatasetInfo:
    from raylane.config import REMOTE_SCHEMES
    from raylane.sources import filesystem

    manifest = read_manifest(uri)
    if manifest is None:
        raise FileNotFoundError(f"{uri} is not a raylane dataset: no {MANIFEST} (run `python -m pipelines ingest`)")
    if not uri.startswith(REMOTE_SCHEMES):
        uri = filesystem(uri)[1]  # absolute: Tune trials run in directories of their own
    return DatasetInfo(uri, manifest)


def write_manifest(uri: str, manifest: dict[str, Any]) -> str:
    from raylane.sources import filesystem

    fs, path = filesystem(join(uri, MANIFEST))
    with fs.open_output_stream(path) as stream:
        stream.write(json.dumps(manifest, indent=2, default=str).encode())
    return join(uri, MANIFEST)
