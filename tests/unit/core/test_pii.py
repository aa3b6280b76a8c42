import pytest

from raylane.pii import PII_KINDS, PLACEHOLDERS, luhn_ok, mask_pii

# (text, expected masked text, expected counts)
MASKED = [
    # email
    ("mail a.b+c@sub.example.co.uk now", "mail [EMAIL] now", {"email": 1}),
    ("Contact: john_doe99@example.com.", "Contact: [EMAIL].", {"email": 1}),
    ("<jane.doe@mail.example.org>, bob@x.io", "<[EMAIL]>, [EMAIL]", {"email": 2}),
    ("write to jo@www.example.com today", "write to [EMAIL] today", {"email": 1}),
    # url
    ("see http://example.com/a?b=1&c=2, then stop", "see [URL], then stop", {"url": 1}),
    ("docs at https://docs.example.org/en/latest/.", "docs at [URL].", {"url": 1}),
    ("(mirror: ftp://ftp.example.net/pub/file.tar.gz)", "(mirror: [URL])", {"url": 1}),
    ("visit www.example.com/path now", "visit [URL] now", {"url": 1}),
    ("visit WWW.EXAMPLE.COM!", "visit [URL]!", {"url": 1}),
    ("read https://en.wikipedia.org/wiki/Foo_(bar) first", "read [URL] first", {"url": 1}),
    ("(see https://example.com/x).", "(see [URL]).", {"url": 1}),
    ("server http://10.0.0.1:8080/status?id=5551234567 is up", "server [URL] is up", {"url": 1}),
    # ip
    ("from 192.168.0.1 and 10.0.0.255", "from [IP] and [IP]", {"ip": 2}),
    ("host 255.255.255.0.", "host [IP].", {"ip": 1}),
    ("net 10.1.2.3/24", "net [IP]/24", {"ip": 1}),
    ("v6 2001:db8::1 here", "v6 [IP] here", {"ip": 1}),
    ("link fe80::1ff:fe23:4567:890a, ok", "link [IP], ok", {"ip": 1}),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "full [IP]", {"ip": 1}),
    ("loopback ::1 and mapped ::ffff:192.0.2.1", "loopback [IP] and mapped [IP]", {"ip": 2}),
    ("addr:fe80::1", "addr:[IP]", {"ip": 1}),
    # card
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok", {"card": 1}),
    ("card 4111-1111-1111-1111.", "card [CARD].", {"card": 1}),
    ("amex 378282246310005", "amex [CARD]", {"card": 1}),
    ("amex 3782 822463 10005, thanks", "amex [CARD], thanks", {"card": 1}),
    ("mc 5500 0000 0000 0004 visa 4012888888881881", "mc [CARD] visa [CARD]", {"card": 2}),
    # phone
    ("call +1 (555) 123-4567 now", "call [PHONE] now", {"phone": 1}),
    ("call 555-123-4567.", "call [PHONE].", {"phone": 1}),
    ("call (555) 123 4567", "call [PHONE]", {"phone": 1}),
    ("London +44 20 7946 0958", "London [PHONE]", {"phone": 1}),
    ("Paris +33 1 23 45 67 89", "Paris [PHONE]", {"phone": 1}),
    ("dot 555.123.4567!", "dot [PHONE]!", {"phone": 1}),
    ("e164 +15551234567", "e164 [PHONE]", {"phone": 1}),
    ("uk +44 (0)20 7946 0958", "uk [PHONE]", {"phone": 1}),
    ("national 020 7946 0958", "national [PHONE]", {"phone": 1}),
    ("fr 01 23 45 67 89", "fr [PHONE]", {"phone": 1}),
    ("Phone:555-123-4567", "Phone:[PHONE]", {"phone": 1}),
]

# Text that must come back unchanged, with no counts.
NOT_MASKED = [
    # email
    "meet @ noon",
    "twitter @handle",
    "a@b",
    "user@localhost",
    # url
    "http:// alone",
    "the www. prefix",
    "example.com without scheme",
    "see [EMAIL] and [URL] and [IP] and [CARD] and [PHONE]",
    # ip
    "999.1.1.1",
    "256.1.1.1",
    "version 1.2.3.4.5",
    "v1.2.3.4",
    "at 12:30",
    "at 10:15:30",
    "ratio 3:2",
    "std::vector and cafe::babe",
    "foo :: bar",
    # card
    "4111 1111 1111 1112",
    "4111-1111 1111-1111",
    "1234567890123",
    "pi 3.1415926535897932",
    # phone
    "in 2019",
    "from 2019-2020",
    "on 2020-01-15",
    "on 15.01.2020",
    "on 05.01.2020",
    "python 3.10.2",
    "release v1.2.3",
    "a count of 1,000,000",
    "a count of 1,000,000,000",
    "id 123456",
    "up 45.5%",
    "up 12 34 56 78 90%",
    "order id 1234567890",
    "years 2019 2020 2021",
    "scores 12 34 56 78 90",
    "short 555-1234",
    "call 911",
    "555-123-4567-89",
    "price $1,234.56",
    "",
    "no digits or anything here.",
]


@pytest.mark.parametrize("text, expected, counts", MASKED)
def test_masked(text, expected, counts):
    assert mask_pii(text) == (expected, counts)


@pytest.mark.parametrize("text", NOT_MASKED)
def test_not_masked(text):
    assert mask_pii(text) == (text, {})


MIXED = (
    "Mail jo.smith@example.com or see https://example.com/jo, call +1 (555) 123-4567, "
    "pay with 4111 1111 1111 1111 from 192.168.1.20 in 2019 (v3.10.2, 1,000 items)."
)


def test_mixed_sentence():
    assert mask_pii(MIXED) == (
        "Mail [EMAIL] or see [URL], call [PHONE], pay with [CARD] from [IP] in 2019 (v3.10.2, 1,000 items).",
        {"email": 1, "url": 1, "ip": 1, "card": 1, "phone": 1},
    )


@pytest.mark.parametrize(
    "kinds, expected, counts",
    [
        (
            ("email",),
            "Mail [EMAIL] or see https://example.com/jo, call +1 (555) 123-4567, "
            "pay with 4111 1111 1111 1111 from 192.168.1.20 in 2019 (v3.10.2, 1,000 items).",
            {"email": 1},
        ),
        (
            ["phone", "card"],  # list, any order: applied in PII_KINDS order anyway
            "Mail jo.smith@example.com or see https://example.com/jo, call [PHONE], "
            "pay with [CARD] from 192.168.1.20 in 2019 (v3.10.2, 1,000 items).",
            {"card": 1, "phone": 1},
        ),
        (
            ("url", "ip"),
            "Mail jo.smith@example.com or see [URL], call +1 (555) 123-4567, "
            "pay with 4111 1111 1111 1111 from [IP] in 2019 (v3.10.2, 1,000 items).",
            {"url": 1, "ip": 1},
        ),
        ((), MIXED, {}),
    ],
)
def test_kinds_restrict_masking(kinds, expected, counts):
    assert mask_pii(MIXED, kinds) == (expected, counts)


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="ssn"):
        mask_pii("x", ("email", "ssn"))


def test_placeholders_survive_later_passes():
    once, counts = mask_pii("jo@example.com, www.example.com, 10.0.0.1, 555-123-4567")
    assert once == "[EMAIL], [URL], [IP], [PHONE]"
    assert counts == {"email": 1, "url": 1, "ip": 1, "phone": 1}
    assert mask_pii(once) == (once, {})
    assert set(PLACEHOLDERS) == set(PII_KINDS)


@pytest.mark.parametrize(
    "digits, ok",
    [
        ("4111111111111111", True),
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        ("378282246310005", True),
        ("79927398713", True),
        ("0", True),
        ("4111111111111112", False),
        ("79927398710", False),
        ("", False),
        ("4111x1111", False),
        ("٤١١١١١١١١١١١١١١١", False),  # non-ASCII digits are not card digits
    ],
)
def test_luhn(digits, ok):
    assert luhn_ok(digits) is ok


def test_a_model_prepares_raw_text_as_ingest_prepared_its_training_data(tmp_path):
    """Serving and batch prediction use the preparation stored with the model; it must give
    exactly ingest's text for the same raw fields."""
    from raylane.ingest.transforms import RowSpec
    from raylane.text import TextPrep, join_text
    from tests.rows import prepare_row

    raw = ["Contact  Jo@Example.com", "or call +1 (555) 123-4567 \u2163 times\x07, see https://x.io/a"]
    for lowercase, kinds in ((False, PII_KINDS), (True, ("email", "url")), (True, ())):
        spec = RowSpec(n_input_fields=2, has_id=False, lowercase=lowercase, max_chars=1000, pii_kinds=kinds)
        ingested = prepare_row("", raw, "a", None, spec)["text"]
        TextPrep(lowercase, kinds).save(tmp_path)
        assert TextPrep.of_model(tmp_path)(join_text(raw)) == ingested
    assert TextPrep.of_model(tmp_path / "no-such-dir") == TextPrep()  # older models: cleaning only
