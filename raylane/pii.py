"""Mask personal data (emails, URLs, IP addresses, card numbers, phone numbers) in free text.

Pure `re`, no Ray or pandas: it runs once per row over large datasets, so every regex is compiled
at import, and each kind is skipped by a cheap test when the text cannot contain it
(no "@" means no email, no run of 9 digits means no card or phone, and so on).

Kinds are applied in the fixed order of `PII_KINDS`, whatever order the caller lists them in:

- email before url: an address such as ``jo@www.example.com`` is masked whole, not left as
  ``jo@[URL]``.
- url before ip, card and phone: a URL swallows the numbers inside it
  (``http://10.0.0.1:8080/?id=5551234567``), which would otherwise be masked piecemeal.
- ip before card and phone: a dotted quad such as ``192.168.100.200`` has phone-like digit groups.
- card before phone: a spaced 13-15 digit card number also looks like an international phone
  number, and the card test (Luhn) is the stricter one.

Placeholders contain no digit, "@", "://" or "www.", and the URL body excludes "[" and "]", so no
later pass can match (or grow into) a placeholder that an earlier pass wrote.

Precision is preferred to recall for numbers, because prose is full of numbers that are not
personal data (years, dates, versions, counts, times, prices):

- phone numbers need a leading "+", a parenthesised area code, or a national layout
  (NANP 3-3-4 such as 555-123-4567, or a trunk "0" prefix such as 020 7946 0958); a bare run of
  digits such as an order id 1234567890 is left alone, as are lists of numbers like 2019 2020 2021.
- card numbers need 13-19 digits, one kind of separator (single spaces or single dashes) or none,
  and a valid Luhn checksum. A bare 13-19 digit id that happens to pass Luhn (1 in 10) is masked.
- a four-part dotted number with every part <= 255 (e.g. a version 1.2.3.4 written without "v")
  is masked as an IP address: the two cannot be told apart.
- IPv6 needs "::" or all eight groups, and at least one decimal digit, so times (12:30, 10:15:30)
  and C++ names (std::move, cafe::babe) are not masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

PII_KINDS = ("email", "url", "ip", "card", "phone")
PLACEHOLDERS = {
    "email": "[EMAIL]",
    "url": "[URL]",
    "ip": "[IP]",
    "card": "[CARD]",
    "phone": "[PHONE]",
}

# --- email ---------------------------------------------------------------------------------------
# The lookbehind makes a match start only at the beginning of a run of local-part characters, which
# keeps the scan linear on long tokens that have no "@".
_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\b"
)

# --- url -----------------------------------------------------------------------------------------
# Body characters: anything but space, quotes, angle/square/curly brackets and parentheses;
# balanced "(...)" pairs are allowed (Wikipedia-style paths), so an unbalanced closing paren is
# left to the sentence. The final lookbehind gives back trailing sentence punctuation.
_URL_CHAR = r"""[^\s<>"'()\[\]{}]"""
_URL = re.compile(
    rf"(?:\b(?:https?|ftp)://|(?<![\w.@-])www\.)"
    rf"(?:{_URL_CHAR}|\({_URL_CHAR}*\))+(?<![.,;:!?])",
    re.IGNORECASE,
)

# --- ip ------------------------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_V4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H = r"[0-9A-Fa-f]{1,4}"
_V6_FORMS = (
    rf"(?:(?:{_H}:){{6}}|::(?:ffff(?::0{{1,4}})?:)?|(?:{_H}:){{1,4}}:){_V4}",  # IPv4 tail
    rf"(?:{_H}:){{7}}{_H}",  # full
    rf"(?:{_H}:){{1,7}}:",  # the rest are "::"-compressed
    rf"(?:{_H}:){{1,6}}:{_H}",
    rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
    rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}",
    rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
    rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
    rf"{_H}:(?::{_H}){{1,6}}",
    rf":(?:(?::{_H}){{1,7}}|:)",
)
_IP = re.compile(
    # IPv4: not part of a longer dotted number (1.2.3.4.5) or a word (v1.2.3.4).
    rf"(?<![\w.]){_V4}(?!\.?\d)(?!\w)"
    # IPv6: not in the middle of a longer hex/colon run; must hold a decimal digit.
    rf"|(?<![\w.])(?<![0-9A-Fa-f:]:)(?=[0-9A-Fa-f:.]*\d)(?:{'|'.join(_V6_FORMS)})"
    rf"(?!\w)(?!:[0-9A-Fa-f:])(?!\.\d)",
    re.ASCII,
)

# --- card ----------------------------------------------------------------------------------------
# One run of digits, or runs joined by one repeated separator (" " or "-"). It opens with a plain
# digit (checked against what precedes it by the lookbehinds) so `re` can skip to digits; the
# lookahead asks for 13 digits up front, so short numbers never reach the Python Luhn check.
_CARD = re.compile(
    r"\d(?<![\w.,+]\d)(?<!\d[ -]\d)"
    r"(?=(?:[ -]?\d){12})"
    r"\d*(?:(?P<cs>[ -])\d+(?:(?P=cs)\d+)*)?"
    r"(?!\w)(?![.,]\d)(?![ -]\d)",
    re.ASCII,
)

# --- phone ---------------------------------------------------------------------------------------
# Every digit group is a whole run of digits ((?!\d)), so each text splits one way only and the
# regex cannot backtrack badly. The digit count (9-15) is checked in Python.
_PHONE_FORMS = (
    # +CC then groups, any of " .-" or nothing between, "(area)" allowed: +1 (555) 123-4567
    r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,14}(?!\d))){1,7}",
    # (area) local: (555) 123-4567, (020) 7946 0958
    r"\(\d{2,5}\) ?\d{3,4}[ .-]?\d{4}",
    # NANP 3-3-4 with one repeated separator: 555-123-4567, 555.123.4567
    r"\d{3}(?P<ns>[ .-])\d{3}(?P=ns)\d{4}",
    # national with trunk "0", one repeated separator: 020 7946 0958, 01 23 45 67 89
    r"0\d{1,4}(?P<ts>[ .-])\d{2,4}(?!\d)(?:(?P=ts)\d{2,4}(?!\d)){1,4}",
)
_PHONE = re.compile(
    rf"(?<![\w+])(?<!\d[.,:/-])(?:{'|'.join(_PHONE_FORMS)})(?![\w%])(?![.,:/-]\d)",
    re.ASCII,
)

# Cheap pre-tests. Each regex below starts with a character class, which lets `re` jump straight
# to candidate positions instead of trying every offset; they are necessary conditions only.
_DIGIT = re.compile(r"[0-9]")
_V4_HINT = re.compile(r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]")
# 9 digits with at most 3 of " ().+-" between neighbours: every phone (9+ digits) and card
# (13+ digits) layout above contains such a run.
_LONG_NUMBER = re.compile(r"[0-9](?:[ ().+-]{0,3}[0-9]){8}")
_NON_DIGIT = re.compile(r"[^0-9]")


def luhn_ok(digits: str) -> bool:
    """True if `digits` passes the Luhn checksum. Spaces and dashes are ignored; any other
    non-digit character, or no digits at all, gives False."""
    ds = digits.replace(" ", "").replace("-", "")
    if not (ds.isascii() and ds.isdigit()):
        return False
    total = 0
    for i, ch in enumerate(reversed(ds)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digit_count(s: str) -> int:
    return len(_NON_DIGIT.sub("", s))


def _card_ok(s: str) -> bool:
    return 13 <= _digit_count(s) <= 19 and luhn_ok(s)


def _phone_ok(s: str) -> bool:
    return 9 <= _digit_count(s) <= 15


# kind -> (compiled pattern, extra test on the match or None)
_PASSES: dict[str, tuple[re.Pattern[str], Callable[[str], bool] | None]] = {
    "email": (_EMAIL, None),
    "url": (_URL, None),
    "ip": (_IP, None),
    "card": (_CARD, _card_ok),
    "phone": (_PHONE, _phone_ok),
}


def _candidates(text: str) -> list[str]:
    """Kinds that may occur in `text`, in `PII_KINDS` order, by cheap tests. A kind left out
    cannot occur; masking only removes text, so the answer stays safe across passes."""
    kinds = []
    if "@" in text:
        kinds.append("email")
    if "://" in text or "www." in text or "WWW." in text:
        kinds.append("url")
    if _DIGIT.search(text) is None:
        return kinds
    # IPv6 needs "::" or all eight groups (seven colons); IPv4 a dotted quad.
    if "::" in text or text.count(":") >= 7 or _V4_HINT.search(text):
        kinds.append("ip")
    if _LONG_NUMBER.search(text):
        kinds += ("card", "phone")
    return kinds


def _mask_one(kind: str, text: str) -> tuple[str, int]:
    pattern, accept = _PASSES[kind]
    placeholder = PLACEHOLDERS[kind]
    if accept is None:
        return pattern.subn(placeholder, text)
    n = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal n
        if accept(m.group()):
            n += 1
            return placeholder
        return m.group()

    return pattern.sub(repl, text), n


def _wanted(kinds: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(kinds)
    unknown = wanted.difference(PII_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {PII_KINDS}")
    return wanted


_ALL = frozenset(PII_KINDS)


def mask_pii(text: str, kinds: tuple[str, ...] | list[str] = PII_KINDS) -> tuple[str, dict[str, int]]:
    """Return the text with each found item of the given kinds replaced by its placeholder, and
    counts per kind (only kinds with count > 0 appear).

    Kinds are applied in `PII_KINDS` order whatever order `kinds` lists them in (see the module
    docstring); an unknown kind raises ValueError.
    """
    wanted = _ALL if kinds is PII_KINDS else _wanted(kinds)
    counts: dict[str, int] = {}
    if not text:
        return text, counts
    for kind in _candidates(text):
        if kind in wanted:
            text, n = _mask_one(kind, text)
            if n:
                counts[kind] = n
    return text, counts
