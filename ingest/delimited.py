"""Records of a delimited text file (CSV, TSV), from its physical lines, so that every line is
accounted for: a blank line, or part of exactly one record.

Real exports often hold unescaped double quotes: a review that starts with a quotation, a message
like `"Hi" she said`. A CSV reader takes a quote at the start of a field as the start of a quoted
field and swallows every following line up to the next quote into that one field; the lines in
between vanish into a single record that carries the first line's label. Here a record that
spans lines is accepted only if it looks like a real multi-line field:

- a quote still open after `max_record_lines` lines (or at the end of the file), or
- a span whose every line (blank lines aside), read with the quote as an ordinary character, is
  a whole record of the header's width on its own

is a stray quote: its first line is read with the quote as an ordinary character, one record,
and the lines after it are read again from there. No line that follows a stray quote is lost.
With `quoting=False` a quote is always an ordinary character and every line is one record.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

QUOTE = '"'
csv.field_size_limit(2**31 - 1)  # a huge field is quarantined as too long later, not a parse error here
# The states of a field scan, as Python's csv reader (non-strict) sees them.
_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)


@dataclass(frozen=True)
class Span:
    """One record: the physical line it starts on (from 1), how many lines it covers, its
    fields, and whether it was read with the quote as an ordinary character after a stray quote."""

    line: int
    lines: int
    fields: list[str]
    literal: bool = False


def _strip_ending(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-1]
    return text[:-1] if text.endswith("\r") else text


def _scan(text: str, state: int, delimiter: str) -> int:
    """The field state after `text`, from `state`: a quote opens a quoted field only at the start
    of a field; inside one, two quotes are a quote and one closes it."""
    if QUOTE not in text:
        return _QUOTED if state == _QUOTED else _UNQUOTED
    for char in text:
        if state == _QUOTED:
            if char == QUOTE:
                state = _QUOTE_IN_QUOTED
        elif state == _QUOTE_IN_QUOTED:
            state = _QUOTED if char == QUOTE else (_START if char == delimiter else _UNQUOTED)
        elif char == delimiter:
            state = _START
        elif state == _START:
            state = _QUOTED if char == QUOTE else _UNQUOTED
    return state


class DelimitedRecords:
    """Iterate `records()` over the lines of one file (each with its line ending, as a text file
    opened with newline="\\n" gives them). Counters after the iteration: `lines` read, `blank`
    lines, and `literal` records read with the quote as an ordinary character. `width`, the
    header's field count, is set by the caller once the header is known."""

    def __init__(self, lines: Iterable[str], delimiter: str, quoting: bool = True, max_record_lines: int = 16):
        self._source = iter(lines)
        self.delimiter, self.quoting, self.max_record_lines = delimiter, quoting, max(1, max_record_lines)
        self.width: int | None = None
        self.lines = self.blank = self.literal = 0
        self._pending: deque[tuple[int, str]] = deque()

    def _next(self) -> tuple[int, str] | None:
        if self._pending:
            return self._pending.popleft()
        text = next(self._source, None)
        if text is None:
            return None
        self.lines += 1
        return self.lines, text

    def _split(self, text: str) -> list[str]:
        return _strip_ending(text).split(self.delimiter)

    def records(self) -> Iterator[Span]:
        while (first := self._next()) is not None:
            number, text = first
            if not _strip_ending(text):
                self.blank += 1
                continue
            if not self.quoting or QUOTE not in text:
                yield Span(number, 1, self._split(text))
                continue
            span = [first]
            state = _scan(text, _START, self.delimiter)
            while state == _QUOTED and len(span) < self.max_record_lines and (more := self._next()) is not None:
                span.append(more)
                state = _scan(more[1], state, self.delimiter)
            if state == _QUOTED or (len(span) > 1 and self._each_line_a_record(span)):
                self._pending.extendleft(reversed(span[1:]))
                self.literal += 1
                yield Span(number, 1, self._split(text), literal=True)
                continue
            yield Span(number, len(span), self._parse("".join(t for _, t in span)))

    def _each_line_a_record(self, span: list[tuple[int, str]]) -> bool:
        """Whether every line of the span that is not blank reads as a whole record on its own."""
        lines = [text for _, text in span if _strip_ending(text)]
        return self.width is not None and all(len(self._split(text)) == self.width for text in lines)

    def _parse(self, text: str) -> list[str]:
        text = _strip_ending(text)
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter, strict=False))
        except csv.Error:  # a lone carriage return where the csv module allows none
            return text.split(self.delimiter)
        # The scan and the csv module agree on where a record ends; a line break the csv module
        # reads differently (a lone carriage return) gives more than one row: their fields, in order.
        return rows[0] if len(rows) == 1 else [field for row in rows for field in row]
