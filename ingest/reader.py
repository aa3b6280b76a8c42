"""Read source files row by row, so that one bad row is quarantined instead of failing its file.

Arrow's CSV and JSON readers stop at the first row they cannot parse (broken quoting, a stray
byte that is not UTF-8, a line that is not JSON). Here each file is parsed with Python's `csv`
and `json`, and every record comes out as one row of a fixed schema: where it came from, the
requested fields as strings, its original content, and a parse error if it had one. Whole-file
problems (empty, unreadable, a required column missing) are found up front by `check_file`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from raylane.sources import IngestError, SourceFile

# Parse-level quarantine reasons (the rest are decided in `transforms`).
MALFORMED = "malformed_row"
UNDECODABLE = "undecodable"

CHUNK_ROWS = 8192
_POSITION_BITS = 40  # a file holds < 2**40 records; its ordinal fills the bits above

csv.field_size_limit(2**31 - 1)
_to_json = json.JSONEncoder(ensure_ascii=False).encode  # a huge field is quarantined as too long, not a parse error


@dataclass(frozen=True)
class FileTask:
    """One file to read and where its rows go: `role` is "data" or "test" (an explicit test
    source), `ordinal` orders files so every row gets a unique, stable position.

    A big file can be shared by `parts` tasks: each parses the whole file (record boundaries in
    CSV depend on quoting, so no task can start mid-file) but builds rows only for the chunks of
    CHUNK_ROWS records whose number modulo `parts` is its `part`. Parsing is the cheap part of
    reading; building, cleaning and masking rows is the costly rest, and that is what is split."""

    file: SourceFile
    ordinal: int
    role: str
    part: int = 0
    parts: int = 1

    def owns(self, record: int) -> bool:
        """Whether this task builds the row of the file's `record`-th record (from 0)."""
        return self.parts == 1 or (record // CHUNK_ROWS) % self.parts == self.part


def field_columns(n: int) -> list[str]:
    return [f"field_{i}" for i in range(n)]


def schema(n_fields: int) -> pa.Schema:
    return pa.schema(
        [
            ("source", pa.string()),
            ("line", pa.int64()),
            ("pos", pa.int64()),
            ("role", pa.string()),
            ("error", pa.string()),
            ("raw", pa.string()),
        ]
        + [(name, pa.string()) for name in field_columns(n_fields)]
    )


def _printable(text: str) -> str:
    """Undecodable bytes (kept as surrogates while parsing) shown as \\xNN, so the row can be stored."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _decodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _as_field(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


Record = tuple[int, str, list, str]  # (line, original content, field values, parse error)


class _Chunk:
    """Collects records of one file and turns them into an Arrow table of `schema(n)`."""

    def __init__(self, task: FileTask, n_fields: int):
        self.task, self.n_fields = task, n_fields
        self.columns: dict[str, list] = {name: [] for name in schema(n_fields).names}
        self.lines, self.raws, self.errors = self.columns["line"], self.columns["raw"], self.columns["error"]
        self.fields = [self.columns[name] for name in field_columns(n_fields)]

    def add(self, line: int, raw: str, fields: list[str | None], error: str) -> None:
        self.lines.append(line)
        self.raws.append(raw)
        self.errors.append(error)
        for column, value in zip(self.fields, fields):
            column.append(value)

    def table(self) -> pa.Table:
        # Per-file constants and positions are filled in here, once per chunk.
        n, base = len(self.lines), self.task.ordinal << _POSITION_BITS
        self.columns["source"] = [self.task.file.uri] * n
        self.columns["role"] = [self.task.role] * n
        self.columns["pos"] = [base | line for line in self.lines]
        return pa.table(self.columns, schema=schema(self.n_fields))


def _csv_records(stream, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, fields). Invalid UTF-8 survives as surrogates; the BOM goes."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter, strict=False)
    start = 1
    for record in reader:
        if record:  # blank lines are not records
            yield start, record
        start = reader.line_num + 1


def _csv(task: FileTask, fields: list[str], delimiter: str) -> Iterator[Record]:
    none = [None] * len(fields)
    with task.file.open() as stream:
        records = _csv_records(stream, delimiter)
        header = next(records, (0, []))[1]
        index = {name: i for i, name in enumerate(header)}
        wanted = [index.get(name) for name in fields]
        for n, (line, record) in enumerate(records):
            if not task.owns(n):
                continue
            if len(record) != len(header):
                yield line, json.dumps([_printable(v) for v in record], ensure_ascii=False), none, MALFORMED
                continue
            raw = _to_json(dict(zip(header, record)))
            if _decodes(raw):
                yield line, raw, [None if i is None else record[i] for i in wanted], ""
            else:
                yield line, _printable(raw), none, UNDECODABLE


def _jsonl(task: FileTask, fields: list[str]) -> Iterator[Record]:
    none = [None] * len(fields)
    n = -1
    with task.file.open() as stream:
        for line, data in enumerate(io.BufferedReader(stream), start=1):
            if not data.strip():
                continue
            n += 1
            if not task.owns(n):
                continue
            try:
                raw = data.decode("utf-8-sig" if line == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield line, data.decode("utf-8", "backslashreplace").rstrip("\r\n"), none, UNDECODABLE
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if isinstance(record, dict):
                yield line, raw, [_as_field(record.get(name)) for name in fields], ""
            else:
                yield line, raw, none, MALFORMED


def _parquet(task: FileTask, fields: list[str]) -> Iterator[Record]:
    import pyarrow.parquet as pq

    with task.file.fs.open_input_file(task.file.path) as handle:
        parquet = pq.ParquetFile(handle)
        present = [name for name in fields if name in parquet.schema_arrow.names]
        line = 0
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=present):
            if not task.owns(line):  # a batch goes whole to the task that owns its first record
                line += batch.num_rows
                continue
            for record in batch.to_pylist():
                line += 1
                yield (
                    line,
                    json.dumps(record, ensure_ascii=False, default=str),
                    [_as_field(record.get(n)) for n in fields],
                    "",
                )


def read_file(task: FileTask, fields: list[str]) -> Iterator[pa.Table]:
    """Every record of one file, as tables of `schema(len(fields))` of up to CHUNK_ROWS rows."""
    fmt = task.file.format
    if fmt in ("csv", "tsv"):
        records = _csv(task, fields, "\t" if fmt == "tsv" else ",")
    elif fmt == "jsonl":
        records = _jsonl(task, fields)
    else:
        records = _parquet(task, fields)
    chunk = _Chunk(task, len(fields))
    for n, record in enumerate(records, start=1):
        chunk.add(*record)
        if n % CHUNK_ROWS == 0:
            yield chunk.table()
            chunk = _Chunk(task, len(fields))
    if chunk.columns["line"]:
        yield chunk.table()


def read_files(batch: dict[str, Any], *, fields: list[str]) -> Iterator[pa.Table]:
    """Ray Data entry point: a batch of `FileTask`s in, their rows out, a chunk at a time."""
    for task in batch["task"]:
        yield from read_file(task, fields)


# --- whole-file checks, on the driver, before any compute ---------------------------------------


def check_file(file: SourceFile, required: list[str]) -> None:
    """Fail now, naming the file and the column, if the file cannot give any valid row."""
    if file.size == 0:
        raise IngestError(f"{file.uri}: the file is empty")
    try:
        columns = _columns(file)
    except IngestError:
        raise
    except Exception as err:  # permissions, a corrupt Parquet footer, a vanished object...
        raise IngestError(f"{file.uri}: cannot read the file ({type(err).__name__}: {err})") from None
    missing = [c for c in required if c not in columns]
    if missing:
        hint = ""
        if file.format in ("csv", "tsv") and len(columns) == 1:
            hint = f"; only one column was found: is the delimiter right for .{file.format}?"
        raise IngestError(f"{file.uri}: required column '{missing[0]}' is missing (found: {sorted(columns)}){hint}")


def _columns(file: SourceFile) -> set[str]:
    if file.format in ("csv", "tsv"):
        with file.open() as stream:
            header = next(_csv_records(stream, "\t" if file.format == "tsv" else ","), (0, None))[1]
        if header is None:
            raise IngestError(f"{file.uri}: the file has no header row")
        return set(header)
    if file.format == "jsonl":
        return _jsonl_columns(file)
    import pyarrow.parquet as pq

    with file.fs.open_input_file(file.path) as handle:
        return set(pq.ParquetFile(handle).schema_arrow.names)


def _jsonl_columns(file: SourceFile, sample: int = 100) -> set[str]:
    """Keys seen in the first objects: JSON lines have no header, so a column counts as present
    when any of the first `sample` parseable records has it."""
    keys: set[str] = set()
    parsed = 0
    with file.open() as stream:
        for data in io.BufferedReader(stream):
            if parsed >= sample:
                break
            try:
                record = json.loads(data.decode("utf-8-sig", "replace"))
            except ValueError:
                continue
            if isinstance(record, dict):
                keys.update(record)
                parsed += 1
    if not parsed:
        raise IngestError(f"{file.uri}: no JSON object found in the first lines; is this JSON Lines?")
    return keys
