"""Pass three's writer: apply the verdicts to a run of staging files and stream the rows into
Parquet files, a writer per split plus one for the quarantine.

Each row group of the staging files is finalized and appended as it comes, so a task holds one
row group whatever the shard size. (Ray Data's `write_parquet` collects every block of a write
task before writing; with shards of `data.shard_mb` that held a whole shard per task.) File names
are fixed by the group number, so a retried task overwrites its own files.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raylane.dataset import SPLITS
from raylane.ingest.transforms import ACCEPTED, Plan, finalize_batch, output_rows
from raylane.sources import join

QUARANTINE = "quarantine"
QUARANTINE_COLUMNS = ["source", "line", "reason", "detail", "label", "text", "raw"]


def _row_groups(fs: Any, paths: list[str]):
    """The row groups of ingest's own staging files, one table at a time."""
    for path in paths:
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                yield parquet.read_row_group(group)


class ShardWriter:
    """Tables appended one after another -> `<directory>/<prefix>-<n>.parquet` files of at most
    `max_rows` rows each; a file is opened only when there is a row for it."""

    def __init__(self, fs: Any, directory: str, prefix: str, max_rows: int):
        self.fs, self.directory, self.prefix, self.max_rows = fs, directory, prefix, max_rows
        self.rows, self._files, self._in_file = 0, 0, 0
        self._writer: pq.ParquetWriter | None = None
        self._stream = None

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None or self._in_file == self.max_rows:
                self._open(table.schema)
            take = min(table.num_rows, self.max_rows - self._in_file)
            self._writer.write_table(table.slice(0, take))
            self._in_file += take
            self.rows += take
            table = table.slice(take)

    def _open(self, schema: pa.Schema) -> None:
        self.close()
        self.fs.create_dir(self.directory, recursive=True)
        self._stream = self.fs.open_output_stream(join(self.directory, f"{self.prefix}-{self._files:04d}.parquet"))
        self._writer = pq.ParquetWriter(self._stream, schema)
        self._files += 1
        self._in_file = 0

    def close(self) -> int:
        """Finish the open file; the rows written in all."""
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            self._writer = self._stream = None
        return self.rows


def write_group(batch: dict[str, Any], *, fs: Any, root: str, plan: Plan, shard_rows: int) -> dict[str, Any]:
    """Ray Data entry point: one group (its number and its staging paths, one per line) in, the
    rows it wrote per split and to the quarantine out."""
    group, paths = int(batch["group"][0]), str(batch["paths"][0]).splitlines()
    prefix = f"part-{group:05d}"
    splits = {s: ShardWriter(fs, join(root, f"split={s}"), prefix, shard_rows) for s in SPLITS}
    quarantine = ShardWriter(fs, join(root, QUARANTINE), prefix, shard_rows)
    labels = list(plan.labels)
    for table in _row_groups(fs, paths):
        table = finalize_batch(table, plan=plan)
        accepted = pc.equal(table.column("reason"), ACCEPTED)
        rejected = table.filter(pc.invert(accepted))
        if rejected.num_rows:
            quarantine.write(rejected.select(QUARANTINE_COLUMNS))
        rows = output_rows(table.filter(accepted), labels=labels, task=plan.task)
        for split, writer in splits.items():
            part = rows.filter(pc.equal(rows.column("split"), split)).drop_columns(["split"])
            if part.num_rows:
                writer.write(part)
    written = {split: [writer.close()] for split, writer in splits.items()}
    return {"group": [group], **written, "quarantine": [quarantine.close()]}
