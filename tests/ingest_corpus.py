"""A corpus of bad input files, each with what ingest must make of it.

Row-level problems (`ROW_CASES`) are ingested together in one run: nothing may crash, and each
file's rows must end accepted or quarantined with the expected reasons. Whole-file problems
(`FILE_CASES`) must fail before any compute, naming the file (and the column).
Texts are unique per file so that cross-file dedup does not blur the expectations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HEADER = b"title,description,tag\n"


def _jsonl(*records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def _parquet(rows: list[dict]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes
    accepted: int
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.accepted + sum(self.reasons.values())


ROW_CASES = [
    # Enough clean rows of both labels for a label set and a split.
    Case(
        "good.csv",
        HEADER + b"".join(b"good paper %d,about things,%s\n" % (i, b"ab"[i % 2 : i % 2 + 1]) for i in range(30)),
        30,
    ),
    # A quote that never closes is a stray quote, not the start of a field that swallows the rest
    # of the file: its line is read with the quote as a character, and the next line on its own.
    Case(
        "broken_quoting.csv",
        HEADER + b'quoting ok,fine,a\nquoting bad,"never closed,a\nquoting next,row,b\n',
        3,
    ),
    # An unescaped quote at the start of a TSV field, closed three lines later: the export a CSV
    # reader turns into one record carrying the first line's label (lines 3-5 would vanish).
    Case(
        "stray_quote.tsv",
        b'title\tdescription\ttag\n"Hi there\tfirst\ta\nwin money\tsecond\tb\nok" sure\tthird\ta\nplain\tfourth\tb\n',
        4,
    ),
    # A stray quote whose line then has too many fields: quarantined with its line, nothing more.
    Case(
        "stray_quote_bad_line.csv",
        HEADER + b'stray ok,fine,a\n"stray bad,too,many,b\nstray next,row,b\n',
        2,
        {"malformed_row": 1},
    ),
    Case(
        "bad_utf8.csv",
        HEADER + b"utf8 ok,fine,a\nutf8 bad \xff\xfe,here,b\nutf8 ok too,fine,b\n",
        2,
        {"undecodable": 1},
    ),
    Case("bom.csv", b"\xef\xbb\xbf" + HEADER + b"bom first,row,a\nbom second,row,b\n", 2),
    Case("crlf.csv", b'title,description,tag\r\ncrlf one,"two\r\nlines",a\r\ncrlf two,row,b\r\n', 2),
    Case("extra_columns.csv", b"id,title,description,tag,notes\n1,extra one,d,a,n1\n2,extra two,d,b,n2\n", 2),
    Case(
        "wrong_field_count.csv", HEADER + b"fields ok,d,a\nfields too,many,a,b,c\nfields few\n", 1, {"malformed_row": 2}
    ),
    Case(
        "null_labels.jsonl",
        _jsonl(
            {"title": "null label", "description": "d", "tag": None},
            {"title": "absent label", "description": "d"},
            {"title": "label ok", "description": "d", "tag": "a"},
        ),
        1,
        {"missing_field": 2},
    ),
    Case("unknown_labels.csv", HEADER + b"unknown one,d,zzz\nunknown two,d,a\n", 1, {"unknown_label": 1}),
    Case("empty_text.csv", HEADER + b',,a\n"  ","\t ",b\n\x01\x02,\x03,a\nempty ok,d,b\n', 1, {"empty_text": 3}),
    Case("huge_text.csv", HEADER + b"huge," + b"word " * 5000 + b",a\nhuge ok,d,b\n", 1, {"too_long": 1}),
    Case(
        "duplicates.jsonl",
        _jsonl(
            {"title": "Same  text", "description": "here", "tag": "a"},
            {"title": "same text ", "description": "here", "tag": "a"},  # case differs: kept
            {"title": "Same text", "description": "here", "tag": "a"},
            {"title": "conflict", "description": "x", "tag": "a"},
            {"title": "conflict", "description": "x", "tag": "b"},
        ),
        2,
        {"duplicate": 1, "conflicting_label": 2},
    ),
    Case(
        "malformed.jsonl",
        _jsonl({"title": "json ok", "description": "d", "tag": "b"}, b"{not json", b"[1, 2]", b'"a string"'),
        1,
        {"malformed_row": 3},
    ),
    Case("header_only.csv", HEADER, 0),
    Case(
        "nulls.parquet",
        _parquet(
            [{"title": "parquet ok", "description": "d", "tag": "a"}, {"title": None, "description": None, "tag": "b"}]
        ),
        1,
        {"missing_field": 1},
    ),
    Case("good.tsv", b"title\tdescription\ttag\ntsv one\td\ta\ntsv two\td, with comma\tb\n", 2),
]

# name, content, the message the error must contain
FILE_CASES = [
    ("empty.csv", b"", "the file is empty"),
    ("missing_column.csv", b"title,description\nx,y\n", "required column 'tag' is missing"),
    ("wrong_delimiter.csv", b"title;description;tag\nx;y;a\n", "is the delimiter right"),
    ("corrupt.parquet", b"PAR1 this is not parquet", "cannot read the file"),
    ("not_json.jsonl", b"title,description,tag\n", "no JSON object"),
]


def write(cases: list[Case], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for case in cases:
        (directory / case.name).write_bytes(case.content)
    return directory
