"""Records from the physical lines of CSV/TSV files: real multi-line fields stay whole, a stray
quote swallows nothing, and every line is a blank line or part of exactly one record."""

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylane.ingest.delimited import DelimitedRecords


def _read(text: str, delimiter: str = ",", quoting: bool = True, max_record_lines: int = 16):
    parser = DelimitedRecords(io.StringIO(text, newline="\n"), delimiter, quoting, max_record_lines)
    spans = []
    for span in parser.records():
        spans.append(span)
        if parser.width is None:
            parser.width = len(span.fields)  # the first record is the header
    return spans, parser


def _assert_every_line_once(text: str, spans, parser) -> None:
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    covered = [n for s in spans for n in range(s.line, s.line + s.lines)]
    assert parser.lines == lines
    assert len(covered) == len(set(covered)) == lines - parser.blank  # no line twice, none lost


def test_quoted_fields_keep_their_newlines_delimiters_and_doubled_quotes():
    text = 'id,title,desc,tag\n1,a,"multi\nline, desc",x\n2,b,plain,y\n\n3,c,"q ""inner"" q",z\r\n'
    spans, parser = _read(text)
    assert [s.fields for s in spans] == [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    assert [(s.line, s.lines) for s in spans] == [(1, 1), (2, 2), (4, 1), (6, 1)]
    assert parser.blank == 1 and parser.literal == 0
    _assert_every_line_once(text, spans, parser)


def test_a_stray_quote_in_a_tsv_swallows_no_following_line():
    # What a spam-collection export looks like: a message that opens with a quote it never closes
    # on its line, and one that quotes mid-sentence. A CSV reader merges lines 2-4 into one field.
    text = 'label\ttext\nham\t"Hi there\nspam\tWin money now\nham\tok" sure, see you\nham\tlast one\n'
    swallowed = list(csv.reader(io.StringIO(text), delimiter="\t"))
    assert len(swallowed) == 3  # the defect: 2 of the 4 messages vanish into one record
    spans, parser = _read(text, "\t")
    assert [s.fields for s in spans[1:]] == [
        ["ham", '"Hi there'],
        ["spam", "Win money now"],
        ["ham", 'ok" sure, see you'],
        ["ham", "last one"],
    ]
    assert [s.literal for s in spans[1:]] == [True, False, False, False] and parser.literal == 1
    _assert_every_line_once(text, spans, parser)


def test_a_blank_line_inside_what_a_stray_quote_would_swallow_changes_nothing():
    text = 'label\ttext\nham\t"Hi there\n\nspam\tWin money\nham\tok" sure\n'
    spans, parser = _read(text, "\t")
    assert [s.fields[1] for s in spans[1:]] == ['"Hi there', "Win money", 'ok" sure'] and parser.blank == 1
    _assert_every_line_once(text, spans, parser)


def test_a_quote_open_to_the_end_of_the_file_is_read_line_by_line():
    text = 'a,b,c\nok,fine,a\nbad,"never closed,a\nnext,row,b\n'
    spans, parser = _read(text)
    assert [s.fields for s in spans[1:]] == [["ok", "fine", "a"], ["bad", '"never closed', "a"], ["next", "row", "b"]]
    _assert_every_line_once(text, spans, parser)


def test_a_record_that_would_span_thousands_of_lines_is_cut_at_max_record_lines():
    body = "".join(f"row {i},text {i}\n" for i in range(5000))
    text = 'id,text\nopen,"a quote that never closes\n' + body
    spans, parser = _read(text, max_record_lines=16)
    assert len(spans) == 1 + 1 + 5000 and all(s.lines == 1 for s in spans)
    assert spans[1].literal and spans[-1].fields == ["row 4999", "text 4999"]
    _assert_every_line_once(text, spans, parser)


def test_quoting_none_reads_every_quote_as_a_character_one_record_per_line():
    text = 'label\ttext\nham\t"Hi there\nspam\t"quoted"\n'
    spans, parser = _read(text, "\t", quoting=False)
    assert [s.fields for s in spans] == [["label", "text"], ["ham", '"Hi there'], ["spam", '"quoted"']]
    assert parser.literal == 0  # nothing to fall back from: quotes never open a field


@pytest.mark.parametrize("text", ["", "\n\n", "a,b", "a,b\n1,2", 'a,b\n"x\n'])
def test_edges_are_still_accounted_for(text):
    spans, parser = _read(text)
    _assert_every_line_once(text, spans, parser)


_LINE = st.text(alphabet=st.sampled_from(list('ab ,\t"\r')), max_size=12)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINE, max_size=40), quoting=st.booleans(), limit=st.integers(1, 6))
def test_any_file_every_line_belongs_to_exactly_one_record_or_is_blank(lines, quoting, limit):
    text = "".join(line + "\n" for line in lines)
    spans, parser = _read(text, ",", quoting, limit)
    _assert_every_line_once(text, spans, parser)
    assert all(1 <= s.lines <= limit for s in spans)
