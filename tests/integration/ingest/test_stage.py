import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from raylane.ingest.stage import run_ingest
from raylane.manifest import read_manifest
from raylane.sources import IngestError
from tests import ingest_corpus
from tests.paths import REPO_ROOT
from tests.s3_server import s3_server


def test_embedded_data_is_fully_accounted_for(smoke_dataset):
    m = smoke_dataset.manifest
    assert m.counts.input == 764 + 191
    assert m.counts.input == m.counts.accepted + m.counts.quarantined
    assert sum(m.splits.values()) == m.counts.accepted
    assert m.labels == ["computer-vision", "mlops", "natural-language-processing", "other"]
    assert m.label2id == {name: i for i, name in enumerate(m.labels)}
    for split, n in m.splits.items():
        rows = smoke_dataset.read_split(split).take_all()
        assert len(rows) == n
        assert sum(m.class_counts[split].values()) == n
        assert set(rows[0]) == {"text", "label", "input_ids", "length"}
    row = smoke_dataset.read_split("train").take(1)[0]
    assert 0 <= row["label"] < 4
    assert row["input_ids"][0] == 101 and len(row["input_ids"]) == row["length"] <= 64  # [CLS] ..., truncated
    lengths = m.token_lengths["train"]
    assert 0 < lengths.p50 <= lengths.p95 <= lengths.max <= 64
    assert [s.role for s in m.sources] == ["test", "data"]
    assert all(len(s.sha256) == 64 and s.size > 0 for s in m.sources)


def test_bad_file_corpus_is_quarantined_row_by_row_and_reconciles(ray_session, smoke_cfg_factory, tmp_path):
    source = ingest_corpus.write(ingest_corpus.ROW_CASES, tmp_path / "corpus")
    cfg = smoke_cfg_factory(f"data.source={source}", "data.test_source=''", "data.labels=[a, b]", out=tmp_path / "out")
    result = run_ingest(cfg)
    m = result.dataset.manifest
    expected = ingest_corpus.ROW_CASES

    assert m.counts.input == sum(c.rows for c in expected)
    assert m.counts.input == m.counts.accepted + m.counts.quarantined
    assert m.counts.accepted == sum(c.accepted for c in expected)
    want_reasons = Counter()
    for case in expected:
        want_reasons.update(case.reasons)
    assert m.counts.quarantine_reasons == dict(want_reasons)

    quarantined = pads.dataset(Path(result.dataset.uri) / "quarantine").to_table().to_pylist()
    by_file: dict[str, Counter] = {}
    for row in quarantined:
        by_file.setdefault(Path(row["source"]).name, Counter())[row["reason"]] += 1
        assert row["raw"] and row["detail"] and row["line"] >= 1
    for case in expected:
        assert dict(by_file.get(case.name, {})) == case.reasons, case.name
    undecodable = next(r for r in quarantined if r["reason"] == "undecodable")
    assert "\\xff" in undecodable["raw"]  # the original bytes, visible
    written = sum(pads.dataset(Path(result.dataset.uri) / f"split={s}").count_rows() for s in ("train", "val", "test"))
    assert written == m.counts.accepted

    # Caching: same sources and config -> reused; a config change or --force -> rerun.
    started = time.time()
    again = run_ingest(cfg)
    assert again.cached and again.dataset.manifest.created_at == m.created_at
    assert time.time() - started < 20
    forced = run_ingest(cfg, force=True)
    assert not forced.cached and forced.dataset.manifest.counts == m.counts


@pytest.mark.parametrize(
    "name, content, message", ingest_corpus.FILE_CASES, ids=[c[0] for c in ingest_corpus.FILE_CASES]
)
def test_whole_file_problems_fail_in_seconds_naming_the_file(tmp_path, tiny_model, name, content, message):
    ingest_corpus.write(ingest_corpus.ROW_CASES[:1], tmp_path / "corpus")
    (tmp_path / "corpus" / name).write_bytes(content)
    started = time.time()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "raylane",
            "ingest",
            f"data.source={tmp_path}/corpus",
            "data.test_source=",
            f"model.name_or_path={tiny_model}",
            f"output_dir={tmp_path}/out",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert name in out.stderr and message in out.stderr
    assert "Traceback" not in out.stderr
    assert time.time() - started < 30  # before Ray starts: no cluster, no compute
    assert not (tmp_path / "out" / "dataset").exists()


def test_object_storage_in_and_out(tmp_path, tiny_model):
    """Shards read from and dataset written to a real S3 server (moto) on loopback, by the CLI."""
    with s3_server(tmp_path) as s3:
        s3.make_bucket("raw-data")
        fs = s3.filesystem()
        cases = {c.name: c for c in ingest_corpus.ROW_CASES}
        for name in ("good.csv", "bad_utf8.csv", "duplicates.jsonl"):
            with fs.open_output_stream(f"raw-data/shards/{name}") as f:
                f.write(cases[name].content)
        env = {**os.environ, **s3.env()}
        env.pop("RAY_ADDRESS", None)
        # Its own store (asserted below): an earlier test's mlflow.set_tracking_uri also sets this.
        env.pop("MLFLOW_TRACKING_URI", None)
        # Credentials inside the URIs (pyarrow takes them from there): they must not be recorded.
        secret = "TopSecret0123"
        cmd = [
            sys.executable,
            "-m",
            "raylane",
            "ingest",
            f"data.source=s3://AKIAUSER:{secret}@raw-data/shards/*",
            "data.test_source=",
            f"data.output_uri=s3://AKIAUSER:{secret}@raw-data/tokenized",
            f"model.name_or_path={tiny_model}",
            f"output_dir={tmp_path}/out",
        ]
        out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "rows read" in out.stdout and "quarantined" in out.stdout  # the summary table
        assert secret not in out.stdout + out.stderr
        with fs.open_input_stream("raw-data/tokenized/manifest.json") as f:
            assert secret not in f.read().decode()
        _assert_not_in_mlflow(f"sqlite:///{tmp_path}/out/mlflow.db", secret, tmp_path / "artifacts")

        os.environ.update(s3.env())  # read_manifest opens s3:// through the same pyarrow env
        try:
            m = read_manifest("s3://raw-data/tokenized")
        finally:
            for key in s3.env():
                os.environ.pop(key, None)
        picked = [cases[n] for n in ("good.csv", "bad_utf8.csv", "duplicates.jsonl")]
        assert m.counts.input == sum(c.rows for c in picked)
        assert m.counts.accepted == sum(c.accepted for c in picked)
        assert all(s.uri.startswith("s3://raw-data/shards/") for s in m.sources)
        train = pads.dataset("raw-data/tokenized/split=train", filesystem=fs, format="parquet").to_table()
        assert train.num_rows == m.splits["train"] > 0
        quarantine = pads.dataset("raw-data/tokenized/quarantine", filesystem=fs, format="parquet").to_table()
        assert quarantine.num_rows == m.counts.quarantined


def _assert_not_in_mlflow(tracking_uri: str, secret: str, scratch: Path) -> None:
    """Nowhere in any run of any experiment: params, tags, metrics' names, dataset inputs, artifacts."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    for run in runs:
        assert secret not in json.dumps(run.to_dictionary(), default=str)
        local = Path(client.download_artifacts(run.info.run_id, "", str(scratch / run.info.run_id)))
        for path in local.rglob("*"):
            assert not path.is_file() or secret not in path.read_text(errors="ignore"), path


def test_missing_column_raises_naming_file_and_column(smoke_cfg_factory, tmp_path):
    (tmp_path / "t.csv").write_text("title,label\na,x\n")
    cfg = smoke_cfg_factory(f"data.source={tmp_path}/t.csv", "data.test_source=''", out=tmp_path / "out")
    with pytest.raises(IngestError, match=r"t\.csv: required column 'description'"):
        run_ingest(cfg)


def test_shards_follow_the_target_size(ray_session, smoke_cfg_factory, tmp_path):
    cfg = smoke_cfg_factory("data.shard_mb=0.02", out=tmp_path / "out")
    result = run_ingest(cfg)
    files = list((Path(result.dataset.uri) / "split=train").glob("*.parquet"))
    assert len(files) >= 3
    assert result.dataset.manifest.shards["train"] == len(files)
    assert json.loads((Path(result.dataset.uri) / "manifest.json").read_text())["counts"]["input"] == 955


def test_an_actor_pool_tokenizes_exactly_as_the_default_tasks(smoke_dataset, smoke_cfg_factory, tmp_path):
    pooled = run_ingest(smoke_cfg_factory("resources.tokenize_actors=2", out=tmp_path / "out")).dataset
    assert pooled.manifest.splits == smoke_dataset.manifest.splits
    for split in ("train", "val", "test"):
        by_tasks = sorted(
            (r["text"], r["label"], list(r["input_ids"])) for r in smoke_dataset.read_split(split).take_all()
        )
        by_actors = sorted((r["text"], r["label"], list(r["input_ids"])) for r in pooled.read_split(split).take_all())
        assert by_actors == by_tasks


def test_local_ray_workers_allocate_arrow_memory_with_malloc(ray_session):
    """Workers of a Ray started by raylane use Arrow's system allocator (raylane.runtime), so
    ingest workers give memory back between tasks."""

    @ray_session.remote
    def arrow_allocator() -> str:
        import pyarrow as pa

        return pa.default_memory_pool().backend_name

    assert ray_session.get(arrow_allocator.remote()) == "system"


def _lines(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _stray_quote_export(path: Path, rows: int = 400) -> Path:
    """A TSV the way real exports come: messages with quotes nobody escaped, some opening a
    field and closing lines later, some never closing, and a few blank lines."""
    import random

    rng = random.Random(7)
    lines = ["label\ttext"]
    for i in range(rows):
        text = f"message {i} " + " ".join(rng.choice(["hi", "win", "cash", "ok", "later"]) for _ in range(6))
        if i % 17 == 3:
            text = '"' + text  # opens a quoted field on a line that never closes it
        elif i % 23 == 5:
            text = text + ' she said "see you"'
        elif i % 29 == 7:
            text = 'ok" ' + text  # a quote mid-field: closes whatever a reader thinks is open
        lines.append(f"{'spam' if i % 3 == 0 else 'ham'}\t{text}")
        if i % 97 == 50:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("quoting", ["csv", "none"])
def test_an_export_with_stray_quotes_loses_no_line(ray_session, smoke_cfg_factory, tmp_path, quoting):
    source = _stray_quote_export(tmp_path / "spam.tsv")
    cfg = smoke_cfg_factory(
        f"data.source={source}",
        "data.test_source=''",
        "data.text_fields=[text]",
        "data.label_field=label",
        f"data.quoting={quoting}",
        out=tmp_path / "out",
    )
    m = run_ingest(cfg).dataset.manifest
    (file,) = m.sources
    assert file.lines == _lines(source) == file.header_lines + file.blank_lines + file.record_lines
    assert file.records == m.counts.input == m.counts.accepted + m.counts.quarantined
    assert file.records == 400 and file.record_lines == 400  # one message per line, none swallowed
    assert m.counts.accepted == 400, m.counts.quarantine_reasons
    assert file.literal_records == (0 if quoting == "none" else 400 // 17 + 1)
    texts = pads.dataset(tmp_path / "out" / "dataset" / "split=train").to_table()
    assert all("\n" not in t for t in texts.column("text").to_pylist())


def test_a_headerless_file_takes_its_column_names_from_the_config(ray_session, smoke_cfg_factory, tmp_path):
    source = tmp_path / "headerless.tsv"
    source.write_text("".join(f"{'pos' if i % 2 else 'neg'}\tsentence number {i}\n" for i in range(60)))
    cfg = smoke_cfg_factory(
        f"data.source={source}",
        "data.test_source=''",
        "data.header=false",
        "data.columns=[label, text]",
        "data.text_fields=[text]",
        "data.label_field=label",
        out=tmp_path / "out",
    )
    m = run_ingest(cfg).dataset.manifest
    assert m.counts.accepted == 60 and m.labels == ["neg", "pos"] and m.sources[0].header_lines == 0


def test_too_much_quarantined_fails_naming_reasons_and_files(ray_session, smoke_cfg_factory, tmp_path):
    # Read as CSV, this TSV is one column: every row lacks the label. The ingest must say so
    # rather than train on what little is left.
    source = tmp_path / "mostly_bad.csv"
    source.write_text(
        "title,description,tag\n"
        + "".join(f"row {i},desc,{'a' if i % 2 else 'b'}\n" if i < 10 else f"row {i}\tdesc\ta\n" for i in range(100))
    )
    cfg = smoke_cfg_factory(
        f"data.source={source}", "data.test_source=''", "data.max_quarantine_fraction=0.5", out=tmp_path / "out"
    )
    with pytest.raises(IngestError) as err:
        run_ingest(cfg)
    message = str(err.value)
    assert "90 of 100 rows" in message and "malformed_row 90" in message and "mostly_bad.csv (90 of 100)" in message
    assert read_manifest(str(tmp_path / "out" / "dataset")) is None  # nothing later stages would trust
    quarantine = pads.dataset(tmp_path / "out" / "dataset" / "quarantine").to_table()
    assert quarantine.num_rows == 90  # but every rejected row is there to look at


def test_a_truncated_or_stale_manifest_is_no_cache_and_no_crash(ray_session, smoke_cfg_factory, tmp_path):
    cfg = smoke_cfg_factory(out=tmp_path / "out")
    first = run_ingest(cfg).dataset
    manifest = Path(first.uri) / "manifest.json"
    manifest.write_text(manifest.read_text()[:200])  # cut short, as by a crash mid-write
    assert not run_ingest(cfg).cached
    assert run_ingest(cfg, force=True).dataset.manifest.counts == first.manifest.counts
    # A manifest over shards that are not all there (an interrupted clear, a hand-deleted file).
    next((Path(first.uri) / "split=train").glob("*.parquet")).unlink()
    again = run_ingest(cfg)
    assert not again.cached and again.dataset.manifest.counts == first.manifest.counts


def test_an_interrupted_force_leaves_nothing_a_rerun_would_trust(tiny_model, tmp_path, cli_env):
    import signal

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "raylane", "ingest", f"model.name_or_path={tiny_model}", f"output_dir={out}"]
    env = cli_env  # each run joins the session's Ray: the kill below is of the driver, which clears
    first = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    manifest = out / "dataset" / "manifest.json"
    forced = subprocess.Popen(
        [*cmd, "--force"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while manifest.exists():  # --force removes the manifest first, then clears the shards
        assert time.time() < deadline and forced.poll() is None
        time.sleep(0.005)
    os.killpg(forced.pid, signal.SIGKILL)  # killed mid-clear (or just after)
    forced.wait()
    assert not manifest.exists()
    rerun = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "reusing" not in rerun.stdout, rerun.stdout[-2000:]
    assert read_manifest(str(out / "dataset")).counts.accepted == 955


def _png(shade: int, size: int = 8) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (size, size), shade).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_an_image_folder_quarantines_what_does_not_decode(ray_session, smoke_cfg_factory, tmp_path):
    folder = tmp_path / "images"
    for label, shades in (("dark", range(0, 40, 4)), ("bright", range(200, 240, 4))):
        (folder / label).mkdir(parents=True)
        for shade in shades:
            (folder / label / f"{shade}.png").write_bytes(_png(shade))
    (folder / "dark" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x13" * 64)
    (folder / "dark" / "truncated.jpg").write_bytes(_jpeg()[:300])
    (folder / "bright" / "empty.png").write_bytes(b"")
    (folder / "bright" / "copy.png").write_bytes(_png(200))  # the same bytes as bright/200.png
    (folder / "bright" / "huge.png").write_bytes(_png(220, size=40))  # 1,600 pixels: over the cap below
    cfg = smoke_cfg_factory(
        "task=image_classification",
        f"data.source={folder}",
        "data.test_source=''",
        "data.label_field=label",
        "data.mask_pii=[]",
        "data.max_image_pixels=1000",
        "train.metric=auto",
        out=tmp_path / "out",
    )
    m = run_ingest(cfg).dataset.manifest
    assert m.counts.input == 25 and m.counts.accepted == 20, m.counts
    assert m.counts.quarantine_reasons == {
        "undecodable_image": 2,
        "empty_image": 1,
        "duplicate": 1,
        "image_too_large": 1,
    }
    assert m.labels == ["bright", "dark"] and m.image_stats["train"].width_p50 == 8
    quarantined = {
        Path(r["source"]).name: r["detail"]
        for r in pads.dataset(tmp_path / "out" / "dataset" / "quarantine").to_table().to_pylist()
    }
    assert "truncated" in quarantined["truncated.jpg"] and "empty" in quarantined["empty.png"]


@pytest.mark.parametrize(
    "task, label_field, rows, accepted, reasons",
    [
        (
            "text_multilabel",
            "tags",
            [["a"], ["b"], ["a", "b"], [], ["a", "zzz"], "not a list", ["b"], ["a"]] + [["a"], ["b"]] * 6,
            17,
            {"empty_labels": 1, "unknown_label": 2},
        ),  # "zzz" inside a list, and a string that is no label
        (
            "text_regression",
            "score",
            [1.5, 2, "3.25", "high", None, "nan", "inf", 4] + [i * 0.5 for i in range(12)],
            16,
            {"invalid_target": 3, "missing_field": 1},
        ),
    ],
)
def test_each_task_quarantines_its_own_bad_labels(
    ray_session, smoke_cfg_factory, tmp_path, task, label_field, rows, accepted, reasons
):
    source = tmp_path / "rows.jsonl"
    source.write_text(
        "".join(json.dumps({"text": f"row number {i}", label_field: value}) + "\n" for i, value in enumerate(rows))
    )
    extra = ["data.labels=[a, b]"] if task == "text_multilabel" else []
    cfg = smoke_cfg_factory(
        f"task={task}",
        f"data.source={source}",
        "data.test_source=''",
        "data.text_fields=[text]",
        f"data.label_field={label_field}",
        "train.metric=auto",
        *extra,
        out=tmp_path / "out",
    )
    m = run_ingest(cfg).dataset.manifest
    assert m.counts.accepted == accepted and m.counts.quarantine_reasons == reasons, m.counts
    assert m.task == task
    if task == "text_regression":
        assert m.target_stats["train"]["rows"] > 0 and m.labels == []


def test_feedback_joins_train_and_val_only_with_its_files_as_provenance(ray_session, smoke_cfg_factory, tmp_path):
    """A feedback sink read beside the source (what `raylane loop` retrains on): its rows go to
    train and val and never test, PII is masked, a text the source already holds keeps the
    source's copy, and the sink's bookkeeping (`_used`, a half-written `.tmp`) is not read."""
    source = tmp_path / "source.csv"
    source.write_text("title,description,tag\n" + "".join(f"source row {i},words,{'ab'[i % 2]}\n" for i in range(60)))
    sink = tmp_path / "feedback"
    fresh = [f"feedback text number {i} about things" for i in range(40)]
    records = [{"text": t, "label": "ab"[i % 2], "prediction_id": f"id{i}"} for i, t in enumerate(fresh)]
    records.append({"text": "source row 3. words", "label": "b", "prediction_id": "dup"})  # the source's text
    records.append({"text": "write to jane@example.com now", "label": "a", "prediction_id": "pii"})
    for part, chunk in enumerate((records[:20], records[20:])):
        partition = sink / "date=2026-12-06" / f"replica={part}"
        partition.mkdir(parents=True)
        (partition / "feedback-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
    (sink / "date=2026-12-06" / "replica=0" / ".feedback-2.jsonl.tmp").write_text("{half a record")
    (sink / "_used" / "expires=2026-12-13").mkdir(parents=True)
    (sink / "_used" / "expires=2026-12-13" / "_id0").write_text("")

    cfg = smoke_cfg_factory(
        f"data.source={source}", "data.test_source=''", f"data.feedback_source={sink}", out=tmp_path / "out"
    )
    dataset = run_ingest(cfg).dataset
    m = dataset.manifest
    assert [s.role for s in m.sources] == ["data", "feedback", "feedback"]
    assert m.counts.input == 60 + 42 and m.counts.quarantine_reasons == {"duplicate": 1}
    texts = {split: {r["text"] for r in dataset.read_split(split).take_all()} for split in m.splits}
    feedback_texts = set(fresh) | {"write to [EMAIL] now"}
    assert not feedback_texts & texts["test"]
    assert feedback_texts <= texts["train"] | texts["val"]
    assert feedback_texts & texts["val"]  # validation sees feedback too, so the sweep ranks on it
    assert "source row 3. words" in texts["train"] | texts["val"] | texts["test"]
