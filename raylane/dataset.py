"""A tokenized dataset as stages exchange it: a directory (or URI) of Parquet shards per split
plus `manifest.json`, which carries the counts, the label map and what produced it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
# Columns every tokenized split carries; `text` stays for evaluation slices and error analysis.
COLUMNS = ("text", "label", "input_ids")


@dataclass(frozen=True)
class DatasetInfo:
    uri: str
    manifest: dict[str, Any]

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest["labels"])

    def split_uri(self, split: str) -> str:
        return f"{self.uri.rstrip('/')}/{split}"

    def read_split(self, split: str):
        """The split as a Ray Dataset (lazy: nothing is read until it is consumed)."""
        import ray.data

        return ray.data.read_parquet(self.split_uri(split))


def open_dataset(uri: str) -> DatasetInfo:
    path = Path(uri).expanduser()
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{uri} is not a raylane dataset: no {MANIFEST} (run `python -m pipelines ingest`)")
    return DatasetInfo(str(path.resolve()), json.loads(manifest_path.read_text()))


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    target = Path(directory) / MANIFEST
    target.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str))
    return target
