"""Find the files behind a source (a path, directory, glob or URI of CSV/TSV/JSONL/Parquet shards)
and open them through pyarrow file systems, local or object storage alike.

Shared by ingest (training data) and batch prediction (data to score)."""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylane.locations import REMOTE_SCHEMES, resolve_input

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"), "image"),  # an image folder
}
_GLOB_CHARS = ("*", "?", "[")


class IngestError(ValueError):
    """A whole-source problem (no files, unreadable or empty file, missing column): fails the
    stage in seconds, naming the file."""


@dataclass(frozen=True)
class SourceFile:
    """One input file. `fs` is a pyarrow FileSystem (picklable, so Ray tasks open the file
    themselves); `uri` is what people see in errors and the manifest."""

    uri: str
    path: str
    fs: Any
    size: int
    format: str

    def open(self):
        return self.fs.open_input_stream(self.path)

    def sha256(self) -> str:
        return self.digest_and_lines()[0]

    def digest_and_lines(self) -> tuple[str, int]:
        """(SHA-256, physical lines) in one pass over the bytes. A line ends at "\n"; a last line
        without one still counts. The count is independent of any parser, so ingest can check
        that its readers accounted for every line (for encodings that write "\n" as that byte)."""
        digest, lines, last = hashlib.sha256(), 0, b"\n"
        with self.open() as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        return digest.hexdigest(), lines + (0 if last == b"\n" else 1)


def join(uri: str, *parts: str) -> str:
    """A path or URI with parts appended ("/"-joined: object storage has no other separator)."""
    return "/".join([uri.rstrip("/"), *parts])


def filesystem(uri: str):
    """(pyarrow FileSystem, path within it) for a local path or an object-storage URI."""
    import pyarrow.fs as pafs

    if uri.startswith(REMOTE_SCHEMES):
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0] + "://" if "://" in uri else ""


def list_files(source: str, fmt: str = "auto") -> list[SourceFile]:
    """Every file the source names, sorted, with its format; an empty match fails now, not
    inside a Ray task."""
    import pyarrow.fs as pafs

    remote = source.startswith(REMOTE_SCHEMES)
    if remote:
        first_glob = min((source.find(c) for c in _GLOB_CHARS if c in source), default=-1)
        base_uri = source if first_glob < 0 else source[: source.rfind("/", 0, first_glob)]
        fs, base = pafs.FileSystem.from_uri(base_uri)
        pattern = base + source[len(base_uri) :] if first_glob >= 0 else None
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.File and pattern is None:
            infos = [info]
        else:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            infos = [
                i
                for i in infos
                if i.type == pafs.FileType.File and (pattern is None or fnmatch.fnmatch(i.path, pattern))
            ]
        prefix = _scheme(source)
    else:
        fs = pafs.LocalFileSystem()
        matched = sorted(glob.glob(resolve_input(source)))
        paths: list[str] = []
        for m in matched:
            paths.extend(sorted(str(p) for p in Path(m).rglob("*") if p.is_file()) if os.path.isdir(m) else [m])
        infos = fs.get_file_info([os.path.abspath(p) for p in paths])
        prefix = ""
    infos = [i for i in infos if not Path(i.path).name.startswith((".", "_"))]  # _SUCCESS, .crc, ...
    if not infos:
        raise IngestError(f"no file matches '{source}'")
    files = [
        SourceFile(prefix + i.path, i.path, fs, i.size, _format(i.path, fmt))
        for i in sorted(infos, key=lambda i: i.path)
    ]
    return files


def _format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise IngestError(f"cannot tell the format of '{path}' from its extension; set data.format")
    return _EXTENSIONS[suffix]


def read_source(source: str, data: Any, required: list[str] | None = None):
    """Open the source lazily as a Ray Dataset, read as `data` (the config's data section)
    says; CSV columns in `required` (default: text fields and label) are read as strings. For
    data to score: ingest reads rows itself, row by row, so it can quarantine what these
    readers would choke on."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    files = list_files(source, data.format)
    paths, fs, fmt = [f.path for f in files], files[0].fs, files[0].format
    if fmt in ("csv", "tsv"):
        columns = required if required is not None else [*data.text_fields, data.label_field]
        quoted = data.quoting == "csv"
        return ray.data.read_csv(
            paths,
            filesystem=fs,
            # Descriptions hold quoted newlines (data.quoting=csv); with quoting none a quote is
            # an ordinary character. Labels like "0"/"1" must stay strings.
            parse_options=pacsv.ParseOptions(
                delimiter="\t" if fmt == "tsv" else ",", quote_char='"' if quoted else False, newlines_in_values=quoted
            ),
            read_options=pacsv.ReadOptions(
                column_names=None if data.header else list(data.columns), encoding=data.encoding
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, strings_can_be_null=True
            ),
        )
    if fmt == "jsonl":
        # Arrow's JSON reader takes one object per line; Ray's `lines=True` reader takes no filesystem.
        return ray.data.read_json(paths, filesystem=fs)
    return ray.data.read_parquet(paths, filesystem=fs)
