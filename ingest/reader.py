"""Read source files row by row, so that one bad row is quarantined instead of failing its file,
and count every line on the way, so that no row can vanish unnoticed.

Arrow's CSV and JSON readers stop at the first row they cannot parse (broken quoting, a stray
byte that is not UTF-8, a line that is not JSON). Here each file is parsed record by record
(`ingest.delimited` for CSV/TSV, `json` for JSON Lines), and every record comes out as one row of
a fixed schema: where it came from (first line and how many lines it spans), the requested
fields as strings, its original content, and a parse error if it had one. Each read task also
reports, per file, its lines: header, blank, and those its records cover; the stage reconciles
them with the file's physical lines and with the rows it staged. Whole-file problems (empty,
unreadable, a required column missing) are found up front by `check_file`.
"""

from __future__ import annotations

import codecs
import io
import json
import pickle
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from raylane.ingest.delimited import DelimitedRecords
from raylane.sources import IngestError, SourceFile

# Parse-level quarantine reasons (the rest are decided in `transforms`). An error may carry its
# detail after ": " ("malformed_row: 3 fields, the header has 2").
MALFORMED = "malformed_row"
UNDECODABLE = "undecodable"

CHUNK_ROWS = 8192
POSITION_BITS = 40  # a file holds < 2**40 lines; its ordinal fills the bits above

_to_json = json.JSONEncoder(ensure_ascii=False).encode  # a huge field is quarantined as too long, not a parse error


@dataclass(frozen=True)
class ReadOptions:
    """How text files are read (the `data` keys of the same names)."""

    header: bool = True
    columns: tuple[str, ...] = ()
    quoting: bool = True
    max_record_lines: int = 16
    encoding: str = "utf-8"
    # An image folder (<label>/<name>.png): the file fills image_field, its folder label_field.
    image_field: str = "image"
    label_field: str = "label"

    @classmethod
    def of(cls, data) -> ReadOptions:
        return cls(
            data.header,
            tuple(data.columns),
            data.quoting == "csv",
            data.max_record_lines,
            data.encoding,
            data.image_field,
            data.label_field,
        )

    @property
    def text_encoding(self) -> str:
        # UTF-8 files often start with a byte-order mark; it is not part of the first field.
        return "utf-8-sig" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding


@dataclass(frozen=True)
class FileTask:
    """One file to read and where its rows go: `role` is "data", "test" (an explicit test
    source) or "feedback" (train and val only), `ordinal` orders files so every row gets a unique, stable position.

    A big file can be shared by `parts` tasks: each parses the whole file (record boundaries in
    CSV depend on quoting, so no task can start mid-file) but builds rows only for the chunks of
    CHUNK_ROWS records whose number modulo `parts` is its `part`. Parsing is the cheap part of
    reading; building, cleaning and masking rows is the costly rest, and that is what is split."""

    file: SourceFile
    ordinal: int
    role: str
    part: int = 0
    parts: int = 1
    # The file's own names for the configured columns, in their order, when it has other names
    # (a feedback sink's "text" and "label"); "" for a column it lacks.
    fields: tuple[str, ...] = ()

    def owns(self, record: int) -> bool:
        """Whether this task builds the row of the file's `record`-th record (from 0)."""
        return self.parts == 1 or (record // CHUNK_ROWS) % self.parts == self.part


@dataclass
class ReadStats:
    """What one read task saw of its file. `records` and `record_lines` (the lines they cover)
    are its own records'; `lines`, `header_lines` and `blank_lines` are the whole file's, as every
    part parses the whole file. `literal` counts its records read with the quote as an ordinary
    character after a stray quote. Text files reconcile: lines == header + blank + record lines
    (summed over the parts). Parquet has rows, not lines: `lines` stays None."""

    ordinal: int
    part: int
    parts: int
    uri: str
    records: int = 0
    record_lines: int = 0
    literal: int = 0
    lines: int | None = None
    header_lines: int = 0
    blank_lines: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def field_columns(n: int) -> list[str]:
    return [f"field_{i}" for i in range(n)]


def schema(n_fields: int) -> pa.Schema:
    return pa.schema(
        [
            ("source", pa.string()),
            ("line", pa.int64()),
            ("lines", pa.int32()),
            ("pos", pa.int64()),
            ("role", pa.string()),
            ("error", pa.string()),
            ("raw", pa.string()),
            ("blob", pa.binary()),  # a binary field's bytes (an image in a Parquet column)
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
    if isinstance(value, bytes):
        return None  # carried as the row's blob, not as text
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# (first line, lines spanned, original content, field values, parse error[, binary field])
Record = tuple


class _Chunk:
    """Collects records of one file and turns them into an Arrow table of `schema(n)`."""

    def __init__(self, task: FileTask, n_fields: int):
        self.task, self.n_fields = task, n_fields
        self.columns: dict[str, list] = {name: [] for name in schema(n_fields).names}
        self.line, self.lines = self.columns["line"], self.columns["lines"]
        self.raws, self.errors, self.blobs = self.columns["raw"], self.columns["error"], self.columns["blob"]
        self.fields = [self.columns[name] for name in field_columns(n_fields)]

    def add(
        self, line: int, lines: int, raw: str, fields: list[str | None], error: str, blob: bytes | None = None
    ) -> None:
        self.line.append(line)
        self.lines.append(lines)
        self.raws.append(raw)
        self.errors.append(error)
        self.blobs.append(blob)
        for column, value in zip(self.fields, fields):
            column.append(value)

    def table(self) -> pa.Table:
        # Per-file constants and positions are filled in here, once per chunk.
        n, base = len(self.line), self.task.ordinal << POSITION_BITS
        self.columns["source"] = [self.task.file.uri] * n
        self.columns["role"] = [self.task.role] * n
        self.columns["pos"] = [base | line for line in self.line]
        return pa.table(self.columns, schema=schema(self.n_fields))


def _text(stream, options: ReadOptions) -> io.TextIOWrapper:
    """Lines split at "\n" only, endings kept; bytes that do not decode survive as surrogates."""
    return io.TextIOWrapper(stream, encoding=options.text_encoding, errors="surrogateescape", newline="\n")


def _delimited(task: FileTask, options: ReadOptions, stream) -> DelimitedRecords:
    delimiter = "\t" if task.file.format == "tsv" else ","
    return DelimitedRecords(_text(stream, options), delimiter, options.quoting, options.max_record_lines)


def _csv(task: FileTask, fields: list[str], options: ReadOptions, stats: ReadStats) -> Iterator[Record]:
    none = [None] * len(fields)
    with task.file.open() as stream:
        parser = _delimited(task, options, stream)
        spans = parser.records()
        if options.header:
            first = next(spans, None)
            header = first.fields if first else []
            stats.header_lines = first.lines if first else 0
        else:
            header = list(options.columns)
        parser.width = len(header)
        index = {name: i for i, name in enumerate(header)}
        wanted = [index.get(name) for name in fields]
        for n, span in enumerate(spans):
            if not task.owns(n):
                continue
            stats.records += 1
            stats.record_lines += span.lines
            stats.literal += span.literal
            record = span.fields
            if len(record) != len(header):
                detail = f"{MALFORMED}: {len(record)} fields, the header has {len(header)}"
                yield (
                    span.line,
                    span.lines,
                    json.dumps([_printable(v) for v in record], ensure_ascii=False),
                    none,
                    detail,
                )
                continue
            raw = _to_json(dict(zip(header, record)))
            if _decodes(raw):
                yield span.line, span.lines, raw, [None if i is None else record[i] for i in wanted], ""
            else:
                yield span.line, span.lines, _printable(raw), none, UNDECODABLE
        stats.lines, stats.blank_lines = parser.lines, parser.blank


def _jsonl(task: FileTask, fields: list[str], options: ReadOptions, stats: ReadStats) -> Iterator[Record]:
    none = [None] * len(fields)
    n = -1
    encoding = options.text_encoding
    with task.file.open() as stream:
        for line, data in enumerate(io.BufferedReader(stream), start=1):
            stats.lines = line
            if not data.strip():
                stats.blank_lines += 1
                continue
            n += 1
            if not task.owns(n):
                continue
            stats.records += 1
            stats.record_lines += 1
            try:
                raw = data.decode(encoding if line == 1 else options.encoding).rstrip("\r\n")
            except UnicodeDecodeError:
                yield line, 1, data.decode("utf-8", "backslashreplace").rstrip("\r\n"), none, UNDECODABLE
                continue
            values, error = _jsonl_record(raw, fields)
            yield line, 1, raw, values or none, error
        stats.lines = stats.lines or 0


def _jsonl_record(raw: str, fields: list[str]) -> tuple[list[str | None] | None, str]:
    """One JSON line's requested fields, or the reason it has none. Nesting deeper than Python's
    recursion limit (a line of 1,000 "[") makes `json` raise RecursionError, not ValueError: that
    too is one malformed row, not a failed ingest."""
    try:
        record = json.loads(raw)
        if not isinstance(record, dict):
            return None, f"{MALFORMED}: not a JSON object"
        return [_as_field(record.get(name)) for name in fields], ""  # a nested field is dumped again
    except RecursionError:
        return None, f"{MALFORMED}: not JSON: nested too deep to parse"
    except ValueError as err:
        return None, f"{MALFORMED}: not JSON ({err})"


def _parquet(task: FileTask, fields: list[str], options: ReadOptions, stats: ReadStats) -> Iterator[Record]:
    import pyarrow.parquet as pq

    with task.file.fs.open_input_file(task.file.path) as handle:
        parquet = pq.ParquetFile(handle)
        present = [name for name in fields if name in parquet.schema_arrow.names]
        row = 0
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=present):
            if not task.owns(row):  # a batch goes whole to the task that owns its first record
                row += batch.num_rows
                continue
            stats.records += batch.num_rows
            for record in batch.to_pylist():
                row += 1
                blob = next((v for v in record.values() if isinstance(v, bytes)), None)
                shown = {k: f"<{len(v)} bytes>" if isinstance(v, bytes) else v for k, v in record.items()}
                raw = json.dumps(shown, ensure_ascii=False, default=str)
                yield row, 1, raw, [_as_field(record.get(n)) for n in fields], "", blob


def _image_file(task: FileTask, fields: list[str], options: ReadOptions, stats: ReadStats) -> Iterator[Record]:
    """An image of an image folder: one record; its folder names its label."""
    with task.file.open() as stream:
        data = stream.read()
    stats.records = 1
    label = task.file.uri.rstrip("/").rsplit("/", 2)[-2] if task.file.uri.count("/") >= 1 else ""
    by_name = {options.image_field: task.file.uri, options.label_field: label}
    raw = json.dumps({"path": task.file.uri, "label": label}, ensure_ascii=False)
    yield 1, 1, raw, [by_name.get(name, task.file.uri.rsplit("/", 1)[-1]) for name in fields], "", data


_READERS = {"csv": _csv, "tsv": _csv, "jsonl": _jsonl, "parquet": _parquet, "image": _image_file}


def read_file(
    task: FileTask, fields: list[str], options: ReadOptions = ReadOptions(), stats: ReadStats | None = None
) -> Iterator[pa.Table]:
    """Every record of one file, as tables of `schema(len(fields))` of up to CHUNK_ROWS rows;
    `stats`, when given, is filled in as the file is read."""
    stats = stats or ReadStats(task.ordinal, task.part, task.parts, task.file.uri)
    records = _READERS[task.file.format](task, list(task.fields) or fields, options, stats)
    chunk = _Chunk(task, len(fields))
    for n, record in enumerate(records, start=1):
        chunk.add(*record)
        if n % CHUNK_ROWS == 0:
            yield chunk.table()
            chunk = _Chunk(task, len(fields))
    if chunk.line:
        yield chunk.table()


def read_files(
    batch: dict[str, Any], *, fields: list[str], options: ReadOptions, stats_dir: str, fs: Any
) -> Iterator[pa.Table]:
    """Ray Data entry point: a batch of pickled `FileTask`s in, their rows out, a chunk at a time; each
    task's `ReadStats` written to `stats_dir` (a retried task overwrites its own file)."""
    for pickled in batch["task"]:
        task = pickle.loads(pickled)  # written by the stage itself, one FileTask per row
        stats = ReadStats(task.ordinal, task.part, task.parts, task.file.uri)
        yield from read_file(task, fields, options, stats)
        with fs.open_output_stream(f"{stats_dir}/{task.ordinal:06d}-{task.part:02d}.json") as out:
            out.write(stats.to_json().encode())


# --- whole-file checks, on the driver, before any compute ---------------------------------------


def check_file(file: SourceFile, required: list[str], options: ReadOptions = ReadOptions()) -> None:
    """Fail now, naming the file and the column, if the file cannot give any valid row."""
    if file.size == 0 and file.format != "image":  # an empty image is one bad row, quarantined
        raise IngestError(f"{file.uri}: the file is empty")
    if not options.header and file.format not in ("csv", "tsv"):
        raise IngestError(f"{file.uri}: data.header=false is for CSV/TSV files; {file.format} names its columns")
    try:
        columns = _columns(file, options)
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


def _columns(file: SourceFile, options: ReadOptions) -> set[str]:
    if file.format in ("csv", "tsv"):
        if not options.header:
            return set(options.columns)
        with file.open() as stream:
            first = next(_delimited(FileTask(file, 0, "data"), options, stream).records(), None)
        if first is None:
            raise IngestError(f"{file.uri}: the file has no header row")
        return set(first.fields)
    if file.format == "jsonl":
        return _jsonl_columns(file, options)
    if file.format == "image":  # an image folder has no columns: the file and its folder fill them
        return {options.image_field, options.label_field}
    import pyarrow.parquet as pq

    with file.fs.open_input_file(file.path) as handle:
        return set(pq.ParquetFile(handle).schema_arrow.names)


def _jsonl_columns(file: SourceFile, options: ReadOptions, sample: int = 100) -> set[str]:
    """Keys seen in the first objects: JSON lines have no header, so a column counts as present
    when any of the first `sample` parseable records has it."""
    keys: set[str] = set()
    parsed = 0
    with file.open() as stream:
        for data in io.BufferedReader(stream):
            if parsed >= sample:
                break
            try:
                record = json.loads(data.decode(options.text_encoding, "replace"))
            except (ValueError, RecursionError):  # a bad line is quarantined later, not a bad file
                continue
            if isinstance(record, dict):
                keys.update(record)
                parsed += 1
    if not parsed:
        raise IngestError(f"{file.uri}: no JSON object found in the first lines; is this JSON Lines?")
    return keys
