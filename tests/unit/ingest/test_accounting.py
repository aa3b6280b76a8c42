"""The line accounting: counts that disagree stop the ingest, naming the file."""

import pytest

from raylane.ingest.accounting import check_quarantine_share, reconcile
from raylane.ingest.plan import RowIndex
from raylane.ingest.reader import FileTask, ReadStats
from raylane.manifest import SourceFile
from raylane.sources import IngestError
from raylane.sources import SourceFile as InputFile

FILE = SourceFile(uri="data/x.csv", role="data", format="csv", size=10, sha256="0" * 64)


def _index(rows: int, lines: int) -> RowIndex:
    index = RowIndex()
    index.rows_by_file[0], index.lines_by_file[0] = rows, lines
    return index


def _stats(**counts) -> ReadStats:
    return ReadStats(ordinal=0, part=0, parts=1, uri=FILE.uri, **counts)


TASK = FileTask(InputFile("data/x.csv", "/x.csv", None, 10, "csv"), 0, "data")


def test_a_file_that_adds_up_is_described_line_by_line():
    stats = _stats(records=3, record_lines=4, lines=6, header_lines=1, blank_lines=1, literal=1)
    (file,) = reconcile([TASK], [FILE], [6], [stats], _index(3, 4), "utf-8")
    assert (file.lines, file.header_lines, file.blank_lines, file.record_lines, file.records) == (6, 1, 1, 4, 3)
    assert file.literal_records == 1


@pytest.mark.parametrize(
    "physical, stats, index, why",
    [
        (7, dict(records=3, record_lines=4, lines=6, header_lines=1, blank_lines=1), (3, 4), "the file has 7 lines"),
        (6, dict(records=3, record_lines=3, lines=6, header_lines=1, blank_lines=1), (3, 3), "6 lines read"),
        (6, dict(records=3, record_lines=4, lines=6, header_lines=1, blank_lines=1), (2, 3), "2 reached staging"),
    ],
)
def test_counts_that_disagree_stop_the_ingest_naming_the_file(physical, stats, index, why):
    with pytest.raises(RuntimeError, match=why) as err:
        reconcile([TASK], [FILE], [physical], [_stats(**stats)], _index(*index), "utf-8")
    assert "data/x.csv" in str(err.value)


def test_a_missing_read_report_is_a_lost_file():
    with pytest.raises(RuntimeError, match="0 read task"):
        reconcile([TASK], [FILE], [6], [], _index(0, 0), "utf-8")


def test_the_quarantine_share_is_checked_against_its_limit():
    counts = {
        "input": 10,
        "quarantined": 6,
        "quarantine_reasons": {"malformed_row": 5, "duplicate": 1},
        "accepted_by_file": {0: 4},
    }
    files = [FILE.model_copy(update={"records": 10})]
    check_quarantine_share(counts, files, 0.6, "q/")  # 60% is not over 60%
    with pytest.raises(IngestError, match=r"6 of 10 rows \(60%\).*malformed_row 5.*data/x.csv \(6 of 10\)"):
        check_quarantine_share(counts, files, 0.5, "q/")
