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
        cmd = [
            sys.executable,
            "-m",
            "raylane",
            "ingest",
            "data.source=s3://raw-data/shards/*",
            "data.test_source=",
            "data.output_uri=s3://raw-data/tokenized",
            f"model.name_or_path={tiny_model}",
            f"output_dir={tmp_path}/out",
        ]
        out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "rows read" in out.stdout and "quarantined" in out.stdout  # the summary table

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
