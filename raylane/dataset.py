"""A tokenized dataset as stages exchange it: a directory or object-storage URI holding one
Hive-style Parquet partition per split (`split=train/`, ...) plus `manifest.json`, which carries
the counts, the label map and what produced it."""

from __future__ import annotations

from dataclasses import dataclass

from raylane.manifest import MANIFEST, Manifest, read_manifest
from raylane.sources import join

SPLITS = ("train", "val", "test")
# MLflow's dataset contexts, by split: the UI shows them beside each input dataset.
CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
# Columns every tokenized split carries; `text` stays for evaluation slices and error analysis.
COLUMNS = ("text", "label", "input_ids", "length")


@dataclass(frozen=True)
class DatasetInfo:
    uri: str
    manifest: Manifest

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def name(self) -> str:
        """The dataset directory's name (`dataset` under the default output_dir)."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def log_inputs(self, mlflow_run, splits: tuple[str, ...] = SPLITS) -> None:
        """Record `splits` as inputs of `mlflow_run` (a `raylane.tracking.RunRef`), each with its
        context: what fills the runs table's Dataset column. By reference: URI and digest."""
        for split in splits:
            mlflow_run.log_dataset(
                self.split_uri(split), name=f"{self.name}/{split}", digest=self.digest, context=CONTEXTS[split]
            )

    def split_uri(self, split: str) -> str:
        return join(self.uri, f"split={split}")

    def read_split(self, split: str):
        """The split as a Ray Dataset (lazy: nothing is read until it is consumed)."""
        import ray.data

        # partitioning=None: the directory name must not come back as a `split` column.
        return ray.data.read_parquet(self.split_uri(split), partitioning=None)


def open_dataset(uri: str) -> DatasetInfo:
    from raylane.locations import REMOTE_SCHEMES
    from raylane.sources import filesystem

    manifest = read_manifest(uri)
    if manifest is None:
        raise FileNotFoundError(f"{uri} is not a raylane dataset: no {MANIFEST} (run `python -m raylane ingest`)")
    if not uri.startswith(REMOTE_SCHEMES):
        uri = filesystem(uri)[1]  # absolute: Tune trials run in directories of their own
    return DatasetInfo(uri, manifest)
