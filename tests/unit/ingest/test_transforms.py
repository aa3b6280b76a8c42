import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from raylane.hashing import stable_hash
from raylane.ingest.plan import RowIndex, build_plan, find_duplicates
from raylane.ingest.reader import FileTask, field_columns, read_file
from raylane.ingest.transforms import (
    ACCEPTED,
    CONFLICTING_LABEL,
    DUPLICATE,
    EMPTY_TEXT,
    MISSING_FIELD,
    TOO_LONG,
    UNKNOWN_LABEL,
    Plan,
    RowSpec,
    finalize_batch,
    normalize,
    output_rows,
    prepare_batch,
    stable_fraction,
)
from raylane.pii import mask_pii
from raylane.sources import list_files
from raylane.text import join_text
from raylane.tokenize import TokenizeBatch, tokenize_batch, tokenizer_definition
from tests import ingest_corpus
from tests.rows import prepare_row

SPEC = RowSpec(n_input_fields=2, pii_kinds=("email", "url", "ip", "card", "phone"), max_chars=50)


def validate(error: str, texts: list, label, text, spec: RowSpec) -> tuple[str, str]:
    row = prepare_row(error, texts, label, None, spec)
    return row["reason"], row["detail"]


@pytest.mark.parametrize(
    "raw, lowercase, clean",
    [
        ("  hello   world ", False, "hello world"),
        ("tab\tand\nnewline\r\n", False, "tab and newline"),
        ("ﬁne ＡＢＣ", False, "fine ABC"),  # NFKC folds ligatures and full-width letters
        ("e\u0301te\u0301", False, "été"),  # combining accents composed
        ("bell\x07char\x00", False, "bell char"),
        ("Mixed CASE Text", True, "mixed case text"),
        ("Straße", True, "straße"),
        (None, False, ""),
        (float("nan"), False, ""),
        (42, False, "42"),
    ],
)
def test_normalize(raw, lowercase, clean):
    assert normalize(raw, lowercase) == clean


@pytest.mark.parametrize(
    "parts, text",
    [
        (["Title", "Description here."], "Title. Description here."),
        (["Title", None], "Title"),
        ([None, "  only description "], "only description"),
        (["", "   "], ""),
    ],
)
def test_join_text(parts, text):
    assert join_text(parts) == text


@pytest.mark.parametrize(
    "error, texts, label, text, reason",
    [
        ("malformed_row", [None, None], None, "", "malformed_row"),
        ("undecodable", [None, None], None, "", "undecodable"),
        ("", ["t", "d"], None, "t. d", MISSING_FIELD),
        ("", ["t", "d"], "", "t. d", MISSING_FIELD),
        ("", [None, None], "a", "", MISSING_FIELD),
        ("", ["", " "], "a", "", EMPTY_TEXT),
        ("", ["x" * 51, None], "a", "x" * 51, TOO_LONG),
        ("", ["x" * 50, None], "a", "x" * 50, ACCEPTED),
        ("", ["t", None], "a", "t", ACCEPTED),
    ],
)
def test_validate_gives_the_first_reason_that_applies(error, texts, label, text, reason):
    assert validate(error, texts, label, text, SPEC)[0] == reason


def test_configured_label_set_quarantines_others():
    spec = RowSpec(n_input_fields=1, labels=("a", "b"))
    assert validate("", ["t"], "a", "t", spec)[0] == ACCEPTED
    assert prepare_row("", ["t"], " b ", None, spec)["reason"] == ACCEPTED  # labels are cleaned too
    assert validate("", ["t"], "c", "t", spec)[0] == UNKNOWN_LABEL


@pytest.mark.parametrize(
    "texts, masked, pii",
    [
        (["Mail jo@example.com", None], "Mail [EMAIL]", {"email": 1}),
        (["See https://x.io/a", "call +1 (555) 123-4567"], "See [URL]. call [PHONE]", {"url": 1, "phone": 1}),
        (["Released 2019-2020, v3.10.2", None], "Released 2019-2020, v3.10.2", {}),
    ],
)
def test_prepare_row_masks_pii_before_anything_is_stored(texts, masked, pii):
    row = prepare_row("", texts, "a", None, SPEC)
    assert row["text"] == masked and row["pii"] == pii
    assert row["text_hash"] == stable_hash(masked)


def test_split_key_is_the_id_when_configured_else_the_text():
    spec = RowSpec(n_input_fields=1, has_id=True)
    with_id = prepare_row("", ["some text"], "a", "row-17", spec)
    without = prepare_row("", ["some text"], "a", None, spec)
    assert with_id["key_frac"] == stable_fraction("row-17")
    assert without["key_frac"] == stable_fraction("some text")


def test_stable_fraction_is_uniform_and_fixed_by_the_key():
    keys = [f"text number {i}" for i in range(20000)]
    fracs = [stable_fraction(k) for k in keys]
    assert fracs == [stable_fraction(k) for k in keys]
    assert all(0 <= f < 1 for f in fracs)
    assert np.histogram(fracs, bins=10, range=(0, 1))[0].min() > 1800


def test_a_row_keeps_its_split_whatever_the_shard_order_and_as_data_grows():
    plan = Plan(labels=("a",), test_cut={"*": 0.1}, val_cut={"*": 0.25})
    keys = [f"row {i}" for i in range(5000)]
    split = {k: plan.split("a", stable_fraction(k), "data") for k in keys}
    shuffled = keys[:]
    random.Random(0).shuffle(shuffled)
    assert {k: plan.split("a", stable_fraction(k), "data") for k in shuffled} == split
    counts = Counter(split.values())
    assert counts["test"] / 5000 == pytest.approx(0.10, abs=0.015)
    assert counts["val"] / 5000 == pytest.approx(0.15, abs=0.015)
    assert plan.split("a", 0.0, "test") == "test"  # an explicit test source stays test


@pytest.mark.parametrize(
    "rows, dropped",
    [
        ([(1, 7, 0), (2, 7, 0), (3, 8, 0)], {2: DUPLICATE}),  # later copy dropped
        ([(5, 7, 0), (2, 7, 0)], {5: DUPLICATE}),  # lowest position kept, not first seen
        ([(1, 7, 0), (2, 7, 1), (3, 7, 0)], {1: CONFLICTING_LABEL, 2: CONFLICTING_LABEL, 3: CONFLICTING_LABEL}),
        ([(1, 7, 0), (2, 8, 1)], {}),
        ([], {}),
    ],
)
def test_find_duplicates(rows, dropped):
    pos, h, lab = (np.asarray(c, np.int64) for c in zip(*rows)) if rows else (np.zeros(0, np.int64),) * 3
    drop_pos, conflict = find_duplicates(pos, h, lab.astype(np.int32))
    got = {int(p): CONFLICTING_LABEL if c else DUPLICATE for p, c in zip(drop_pos, conflict)}
    assert got == dropped


def _index(rows: list[dict]) -> RowIndex:
    index = RowIndex()
    cols = {k: [r[k] for r in rows] for k in ("pos", "role", "reason", "label", "text_hash", "key_frac", "n_chars")}
    index.add(pa.table({**cols, "lines": [1] * len(rows)}))
    return index


def test_stratified_split_gives_every_label_its_exact_share():
    rng = random.Random(1)
    rows = [
        {
            "pos": i,
            "role": "data",
            "reason": "",
            "label": "rare" if i % 10 == 0 else "common",
            "text_hash": i,
            "key_frac": rng.random(),
            "n_chars": 5,
        }
        for i in range(2000)
    ]
    verdicts = build_plan(
        _index(rows), labels=(), dedup=True, stratify=True, val_fraction=0.2, test_fraction=0.1, source="x"
    )
    cc = verdicts.counts["class_counts"]
    assert (cc["test"]["rare"], cc["val"]["rare"], cc["train"]["rare"]) == (20, 40, 140)
    assert (cc["test"]["common"], cc["val"]["common"], cc["train"]["common"]) == (180, 360, 1260)


def test_plan_counts_reconcile_and_test_rows_win_duplicates():
    rows = [
        {"pos": 0, "role": "test", "reason": "", "label": "a", "text_hash": 1, "key_frac": 0.9, "n_chars": 3},
        {"pos": 1, "role": "test", "reason": "", "label": "zzz", "text_hash": 2, "key_frac": 0.9, "n_chars": 3},
        {"pos": 10, "role": "data", "reason": "", "label": "a", "text_hash": 1, "key_frac": 0.9, "n_chars": 3},
        {"pos": 11, "role": "data", "reason": "", "label": "b", "text_hash": 3, "key_frac": 0.9, "n_chars": 3},
        {"pos": 12, "role": "data", "reason": "", "label": "a", "text_hash": 4, "key_frac": 0.9, "n_chars": 3},
        {"pos": 13, "role": "data", "reason": EMPTY_TEXT, "label": "a", "text_hash": 5, "key_frac": 0.9, "n_chars": 0},
    ]
    v = build_plan(_index(rows), labels=(), dedup=True, stratify=False, val_fraction=0.2, test_fraction=0.0, source="x")
    c = v.counts
    assert c["input"] == 6 == c["accepted"] + c["quarantined"]
    assert c["quarantine_reasons"] == {DUPLICATE: 1, UNKNOWN_LABEL: 1, EMPTY_TEXT: 1}
    assert v.plan.labels == ("a", "b")
    assert v.plan.dropped(np.asarray([0, 10, 11])) == ["", DUPLICATE, ""]  # the training copy goes
    assert c["splits"] == {"train": 2, "val": 0, "test": 1}


def test_a_single_label_fails_clearly():
    rows = [
        {"pos": i, "role": "data", "reason": "", "label": "a", "text_hash": i, "key_frac": 0.5, "n_chars": 1}
        for i in range(3)
    ]
    with pytest.raises(ValueError, match="at least 2 labels"):
        build_plan(
            _index(rows), labels=(), dedup=True, stratify=False, val_fraction=0.2, test_fraction=0.1, source="src"
        )


def test_finalize_applies_the_plan_row_by_row():
    batch = pa.table(
        {
            "pos": [1, 2, 3, 4],
            "reason": ["", "", "", EMPTY_TEXT],
            "detail": ["", "", "", "x"],
            "label": ["a", "a", "q", "a"],
            "key_frac": [0.05, 0.5, 0.5, 0.5],
            "role": ["data"] * 4,
        }
    )
    plan = Plan(
        labels=("a", "b"),
        drop_pos=np.asarray([2], np.int64),
        drop_reason=(DUPLICATE,),
        test_cut={"*": 0.1},
        val_cut={"*": 0.3},
    )
    out = finalize_batch(batch, plan=plan).to_pydict()
    assert out["reason"] == ["", DUPLICATE, UNKNOWN_LABEL, EMPTY_TEXT]
    assert out["split"] == ["test", "train", "train", "train"]


def test_prepare_batch_maps_reader_rows_one_to_one(tmp_path):
    corpus = ingest_corpus.write(ingest_corpus.ROW_CASES, tmp_path)
    spec = RowSpec(n_input_fields=2, pii_kinds=("email",), labels=("a", "b"))
    for i, file in enumerate(list_files(str(corpus))):
        case = next(c for c in ingest_corpus.ROW_CASES if c.name == file.path.rsplit("/", 1)[1])
        tables = list(read_file(FileTask(file, i, "data"), ["title", "description", "tag"]))
        rows = sum(t.num_rows for t in tables)
        assert rows == case.rows, case.name
        for table in tables:
            out = prepare_batch(table, spec=spec)
            assert out.num_rows == table.num_rows
            assert set(out.column("reason").to_pylist()) <= {ACCEPTED, *case.reasons, DUPLICATE, CONFLICTING_LABEL}
            assert all(out.column("raw").to_pylist())  # the original content of every row, kept


def test_tokenizer_gives_transformers_ids_to_accepted_rows_only_as_actor_and_as_task(tiny_model):
    from transformers import AutoTokenizer

    texts = ["A short one.", "word " * 400, "Ünïcödé and emoji 🙂", "x", "rejected"]
    reference = AutoTokenizer.from_pretrained(tiny_model)(texts[:4], truncation=True, max_length=32)["input_ids"]
    batch = pa.table({"text": texts, "reason": ["", "", "", "", EMPTY_TEXT]})
    definition = tokenizer_definition(str(tiny_model))
    out = TokenizeBatch(definition, 32)(batch).to_pydict()
    assert out["input_ids"] == [*reference, []]
    assert out["length"] == [*(len(r) for r in reference), 0]
    assert out["reason"] == batch.column("reason").to_pylist()  # the rows pass through, one to one
    assert tokenize_batch(batch, definition=definition, max_length=32).to_pydict() == out


def test_output_rows_index_labels_in_the_plan_order():
    batch = pa.table(
        {
            "text": ["x", "y", "z"],
            "label": ["b", "a", "b"],
            "input_ids": [[1], [2, 3], [4]],
            "length": pa.array([1, 2, 1], pa.int32()),
            "split": ["train", "val", "test"],
            "pos": [1, 2, 3],
        }
    )
    out = output_rows(batch, labels=["b", "a"])
    assert out.column_names == ["text", "label", "input_ids", "length", "split"]
    assert out.column("label").type == pa.int32()
    assert out.column("label").to_pylist() == [0, 1, 0]


def _write_big_source(directory, fmt: str, rows: int):
    """`rows` records over several read chunks, with blank lines, a quoted newline and a broken row."""
    import json as _json

    import pyarrow.parquet as pq

    path = directory / f"big.{fmt}"
    if fmt == "csv":
        lines = ["title,description,tag"]
        for i in range(rows):
            lines.append(f'"t {i}","line one\nline two {i}",a' if i % 997 == 0 else f"t {i},d {i},b")
            if i % 5000 == 0:
                lines.append("")  # a blank line is not a record
        lines[12345] = "only,two"  # a malformed record among them
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "jsonl":
        lines = [_json.dumps({"title": f"t {i}", "description": f"d {i}", "tag": "a"}) for i in range(rows)]
        lines[777] = "{not json"
        lines.insert(9000, "   ")
        path.write_text("\n".join(lines) + "\n")
    else:
        pq.write_table(
            pa.table(
                {
                    "title": [f"t {i}" for i in range(rows)],
                    "description": [f"d {i}" for i in range(rows)],
                    "tag": ["a"] * rows,
                }
            ),
            path,
            row_group_size=5000,
        )
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_file_read_in_parts_gives_every_row_exactly_once(tmp_path, fmt):
    from dataclasses import replace

    from raylane.ingest.reader import CHUNK_ROWS

    rows = 3 * CHUNK_ROWS + 100
    file = list_files(str(_write_big_source(tmp_path, fmt, rows)))[0]
    fields = ["title", "description", "tag"]

    def rows_of(task):
        return [row for table in read_file(task, fields) for row in table.to_pylist()]

    whole = rows_of(FileTask(file, 0, "data"))
    assert len(whole) == rows
    parts = [rows_of(replace(FileTask(file, 0, "data"), part=k, parts=3)) for k in range(3)]
    assert all(parts)  # every part builds rows
    assert sorted(r["pos"] for p in parts for r in p) == sorted(r["pos"] for r in whole)
    by_pos = {r["pos"]: r for r in whole}
    assert all(r == by_pos[r["pos"]] for p in parts for r in p)  # same line, raw, fields and error


_ODD_CHARS = [
    "a",
    "b",
    "Z",
    "1",
    "7",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\x00",
    "\x07",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1f",
    "\x7f",
    "@",
    ".",
    ":",
    "/",
    "www.",
    "://",
    "é",
    "\u00a0",
    "\u2028",
    "\u3000",
    "\x85",
    "ﬁ",
    "①",
    "🙂",
]


def _random_texts(seed: int, n: int = 400) -> list[str | None]:
    rng = random.Random(seed)
    texts = ["".join(rng.choices(_ODD_CHARS, k=rng.randint(0, 12))) for _ in range(n)]
    return texts + [None, "", "   ", "plain ascii words", "Call +1 (555) 123-4567 or jo@example.com"]


@pytest.mark.parametrize("seed", range(5))
def test_clean_column_equals_clean_text_value_by_value(seed):
    from raylane.text import clean_column, clean_text

    texts = _random_texts(seed)
    assert clean_column(pa.chunked_array([pa.array(texts, pa.string())]), texts) == [clean_text(t) for t in texts]


@pytest.mark.parametrize("seed", range(3))
def test_may_hold_pii_never_misses_what_mask_pii_masks(seed):
    from raylane.pii import mask_pii
    from raylane.text import may_hold_pii

    rng = random.Random(seed)
    pii = [
        "jo@example.com",
        "http://x.org/a",
        "www.example.com",
        "10.0.0.1",
        "4111 1111 1111 1111",
        "+44 20 7946 0958",
        "555-123-4567",
        "fe80::1",
        "plain",
    ]
    texts = [t or "" for t in _random_texts(seed)] + [f"{rng.choice(pii)} and {rng.choice(pii)}" for _ in range(200)]
    hints = may_hold_pii(texts)
    assert not all(hints)  # it does rule texts out
    assert all(hint for text, hint in zip(texts, hints) if mask_pii(text)[0] != text)


@pytest.mark.parametrize("lowercase", [False, True])
@pytest.mark.parametrize("fields", [1, 2])
def test_prepare_batch_gives_what_prepare_row_gives(fields, lowercase):
    """A row's result does not depend on the rows batched with it, and its text is what the
    plain per-value functions (join_text, then mask_pii) make of it."""
    texts = _random_texts(fields, 300)
    rng = random.Random(fields)
    n = len(texts)
    spec = RowSpec(
        n_input_fields=fields, lowercase=lowercase, pii_kinds=("email", "url", "ip", "card", "phone"), max_chars=10
    )
    columns = [texts, rng.sample(texts, n)][:fields] + [[rng.choice(["a", "b", None, " A "]) for _ in range(n)]]
    errors = [rng.choice(["", "", "", "malformed_row"]) for _ in range(n)]
    table = pa.table(
        {
            "source": ["f"] * n,
            "line": list(range(n)),
            "lines": [1] * n,
            "pos": list(range(n)),
            "role": ["data"] * n,
            "error": errors,
            "raw": ["{}"] * n,
            **{name: pa.array(col, pa.string()) for name, col in zip(field_columns(fields + 1), columns)},
        }
    )
    out = prepare_batch(table, spec=spec).to_pylist()
    for i, row in enumerate(out):
        want = prepare_row(errors[i], [c[i] for c in columns[:fields]], columns[fields][i], None, spec)
        assert {k: row[k] for k in ("text", "label", "reason", "detail", "text_hash", "key_frac", "n_chars")} == {
            k: want[k] for k in ("text", "label", "reason", "detail", "text_hash", "key_frac", "n_chars")
        }
        assert {k: row[f"pii_{k}"] for k in spec.pii_kinds if row[f"pii_{k}"]} == want["pii"]
        if not errors[i]:
            reference, _ = mask_pii(join_text([c[i] for c in columns[:fields]], lowercase), spec.pii_kinds)
            assert row["text"] == reference and row["n_chars"] == len(reference)
