"""A JSON line that cannot be parsed, however it fails, is one quarantined row: never a crash."""

import json

import pyarrow as pa

from raylane.ingest.reader import MALFORMED, FileTask, ReadStats, check_file, read_file
from raylane.ingest.transforms import ACCEPTED, RowSpec, prepare_batch
from raylane.sources import list_files

DEEP = "[" * 1000 + "]" * 1000  # past Python's recursion limit: json raises RecursionError


def test_rows_nested_too_deep_are_quarantined_and_the_rest_read(tmp_path):
    good = [json.dumps({"title": f"paper {i}", "description": "about things", "tag": "ab"[i % 2]}) for i in range(6)]
    lines = [
        '{"title": "deep field", "description": "d", "tag": ' + DEEP + "}",  # first: check_file samples it
        *good[:3],
        "",
        DEEP,
        *good[3:],
        "{not json",
    ]
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(lines) + "\n")
    (file,) = list_files(str(path))
    check_file(file, ["title", "description", "tag"])  # the sample skips what it cannot parse
    stats = ReadStats(0, 0, 1, file.uri)
    table = pa.concat_tables(list(read_file(FileTask(file, 0, "data"), ["title", "description", "tag"], stats=stats)))
    out = prepare_batch(table, spec=RowSpec(n_input_fields=2, labels=("a", "b"))).to_pydict()

    by_line = dict(zip(table.column("line").to_pylist(), zip(out["reason"], out["detail"])))
    assert [line for line, (reason, _) in by_line.items() if reason == ACCEPTED] == [2, 3, 4, 7, 8, 9]
    assert by_line[1] == by_line[6] == (MALFORMED, "not JSON: nested too deep to parse")
    assert by_line[10][0] == MALFORMED and by_line[10][1].startswith("not JSON (")
    # Every line accounted for: one blank, nine records of one line each, nine rows.
    assert (stats.lines, stats.blank_lines, stats.records, stats.record_lines) == (10, 1, 9, 9)
    assert table.num_rows == len(out["reason"]) == stats.records
    assert table.column("raw").to_pylist()[4] == DEEP  # the original line kept, for the quarantine
