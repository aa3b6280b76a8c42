"""Every line of every input accounted for, checked rather than assumed.

Three independent counts have to agree for each text file:
- its physical lines, counted on the driver from the bytes while hashing them;
- what the readers say of it: header, blank and record lines (`ReadStats`, one per read task);
- the rows that reached staging, and the lines they cover.
A file whose counts disagree fails the ingest (a reader lost or invented rows): nothing is
written that would be trusted later. Then, once every row has its verdict, an ingest that
quarantines more than `data.max_quarantine_fraction` of what it read fails too, naming why.
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from typing import Any

from raylane.ingest.plan import RowIndex
from raylane.ingest.reader import FileTask, ReadStats
from raylane.manifest import Manifest, SourceFile
from raylane.sources import IngestError, filesystem, join


def read_stats(stats_dir: str) -> list[ReadStats]:
    """The `ReadStats` every read task wrote."""
    import pyarrow.fs as pafs

    fs, path = filesystem(stats_dir)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    stats = []
    for info in sorted(infos, key=lambda i: i.path):
        with fs.open_input_stream(info.path) as stream:
            stats.append(ReadStats(**json.loads(stream.read())))
    return stats


def _ascii_compatible(encoding: str) -> bool:
    """Whether a "\n" byte is a line break in this encoding (UTF-8, Latin-1, ...; not UTF-16)."""
    return "\n".encode(codecs.lookup(encoding).name) == b"\n"


def reconcile(
    tasks: list[FileTask],
    files: list[SourceFile],
    physical_lines: list[int],
    stats: list[ReadStats],
    index: RowIndex,
    encoding: str,
) -> list[SourceFile]:
    """`files` (one per input, in ordinal order) with their line accounting filled in, after
    checking that the three counts agree; raises naming the first file that does not."""
    by_file: dict[int, list[ReadStats]] = {}
    for s in stats:
        by_file.setdefault(s.ordinal, []).append(s)
    accounted = []
    for task, file, physical in zip(tasks, files, physical_lines):
        parts = sorted(by_file.get(task.ordinal, []), key=lambda s: s.part)
        if len(parts) != (parts[0].parts if parts else 1):
            raise _lost(file, f"{len(parts)} read task(s) reported on it, {parts[0].parts if parts else 1} ran")
        records, record_lines = sum(p.records for p in parts), sum(p.record_lines for p in parts)
        staged, staged_lines = index.rows_by_file.get(task.ordinal, 0), index.lines_by_file.get(task.ordinal, 0)
        if staged != records:
            raise _lost(file, f"the reader read {records} records, {staged} reached staging")
        whole = parts[0]
        if whole.lines is not None:
            if staged_lines != record_lines:
                raise _lost(file, f"its records cover {record_lines} lines, the staged rows {staged_lines}")
            if whole.lines != whole.header_lines + whole.blank_lines + record_lines:
                raise _lost(
                    file,
                    f"{whole.lines} lines read != {whole.header_lines} header + {whole.blank_lines} "
                    f"blank + {record_lines} in records",
                )
            if _ascii_compatible(encoding) and whole.lines != physical:
                raise _lost(file, f"the file has {physical} lines, the reader saw {whole.lines}")
        accounted.append(
            file.model_copy(
                update={
                    "lines": whole.lines,
                    "header_lines": whole.header_lines,
                    "blank_lines": whole.blank_lines,
                    "record_lines": record_lines,
                    "records": records,
                    "literal_records": sum(p.literal for p in parts),
                }
            )
        )
    return accounted


def _lost(file: SourceFile, why: str) -> RuntimeError:
    return RuntimeError(f"ingest could not account for every line of {file.uri}: {why}; nothing was written")


def check_quarantine_share(counts: dict[str, Any], files: list[SourceFile], limit: float, quarantine: str) -> None:
    """Fail when more than `limit` of the records read were quarantined, naming the top reasons
    and the files that lost the most."""
    read = counts["input"]
    if not read or counts["quarantined"] / read <= limit:
        return
    reasons = Counter(counts["quarantine_reasons"]).most_common(3)
    accepted = counts["accepted_by_file"]
    lost = sorted(((f.records - accepted.get(i, 0), f) for i, f in enumerate(files)), key=lambda x: -x[0])[:3]
    raise IngestError(
        f"{counts['quarantined']} of {read} rows ({counts['quarantined'] / read:.0%}) were quarantined, over "
        f"data.max_quarantine_fraction={limit}: "
        + ", ".join(f"{reason} {n}" for reason, n in reasons)
        + "; most from "
        + ", ".join(f"{f.uri} ({n} of {f.records})" for n, f in lost if n)
        + f". The rows and their reasons are in {quarantine}; if the file is read wrongly, see data.quoting, "
        "data.header and data.columns."
    )


def cached_dataset_problem(out: str, manifest: Manifest) -> str | None:
    """Why the dataset at `out` cannot be reused as its manifest describes it (shards missing,
    rows missing or extra), or None when every split and the quarantine hold what it says."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    fs, root = filesystem(out)
    expected = {f"split={s}": (manifest.shards.get(s), n) for s, n in manifest.splits.items()}
    expected["quarantine"] = (None, manifest.counts.quarantined)
    for name, (shards, rows) in expected.items():
        path = join(root, name)
        files = [
            i.path
            for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
            if i.path.endswith(".parquet")
        ]
        if shards is not None and len(files) != shards:
            return f"{name} holds {len(files)} shard(s), the manifest lists {shards}"
        found = pads.dataset(files, filesystem=fs, format="parquet").count_rows() if files else 0
        if found != rows:
            return f"{name} holds {found} rows, the manifest says {rows}"
    return None
