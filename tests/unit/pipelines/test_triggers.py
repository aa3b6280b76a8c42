"""The loop's triggers and guards on real files: the feedback sink, the source against the
dataset's manifest, the schedule, the cool-down and the budget."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq

from raylane.config import load_config
from raylane.manifest import SourceFile, write_manifest
from raylane.pipelines.loop import why_wait
from raylane.pipelines.triggers import feedback_rows, look
from tests.manifests import make_manifest


def _cfg(tmp_path, *overrides):
    source = tmp_path / "source.csv"
    if not source.exists():
        source.write_text("title,description,tag\na,b,c\n")
    return load_config(
        None,
        [
            f"output_dir={tmp_path / 'out'}",
            f"data.source={source}",
            "data.test_source=''",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "loop.triggers.new_data=false",
            *overrides,
        ],
    )


def _feedback(sink, name: str, n: int) -> None:
    partition = sink / "date=2026-12-06" / "replica=a"
    partition.mkdir(parents=True, exist_ok=True)
    rows = [{"text": f"text {name} {i}", "label": "mlops"} for i in range(n)]
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), partition / name)
    else:
        (partition / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_feedback_fires_on_rows_beyond_those_the_last_cycle_used(tmp_path):
    cfg = _cfg(tmp_path, "loop.triggers.min_feedback=10")
    sink = tmp_path / "out" / "feedback"
    assert feedback_rows(str(sink)) == 0  # nobody wrote yet: no error
    _feedback(sink, "feedback-1.jsonl", 6)
    (sink / "date=2026-12-06" / "replica=a" / ".feedback-2.jsonl.tmp").write_text('{"half": ')
    seen = look(cfg, {}, [])
    assert seen.reasons == [] and seen.seen == ["feedback 6/10 new rows"]
    _feedback(sink, "feedback-3.parquet", 5)
    assert feedback_rows(str(sink)) == 11
    assert look(cfg, {}, []).reasons == ["feedback: 11 new rows (loop.triggers.min_feedback 10)"]
    assert look(cfg, {"feedback_rows": 6}, []).reasons == []  # the last cycle trained on six of them


def test_new_data_compares_the_source_with_the_manifest_by_content(tmp_path):
    cfg = _cfg(tmp_path, "loop.triggers.new_data=true")
    assert look(cfg, {}, []).reasons == [f"new data: no dataset at {tmp_path / 'out' / 'dataset'} yet"]
    source = tmp_path / "source.csv"
    manifest = make_manifest(["c"], {"train": {"c": 1}}, [1])
    recorded = SourceFile(
        uri=str(source),
        role="data",
        format="csv",
        size=source.stat().st_size,
        sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
    )
    feedback = SourceFile(uri=str(tmp_path / "fb.jsonl"), role="feedback", format="jsonl", size=1, sha256="x")
    (tmp_path / "out" / "dataset").mkdir(parents=True)
    write_manifest(str(tmp_path / "out" / "dataset"), manifest.model_copy(update={"sources": [recorded, feedback]}))
    assert look(cfg, {}, []).seen == ["source unchanged"]  # the feedback file is not the source's

    source.write_text("title,description,tag\na,b,d\n")  # same size, other bytes
    assert look(cfg, {}, []).reasons == ["new data: 1 changed (source.csv)"]
    cfg = _cfg(tmp_path, "loop.triggers.new_data=true", f"data.source={tmp_path}/*.csv")
    (tmp_path / "more.csv").write_text("title,description,tag\ne,f,g\n")
    assert look(cfg, {}, []).reasons == ["new data: 1 added (more.csv), 1 changed (source.csv)"]


def test_the_schedule_counts_from_the_last_cycle(tmp_path):
    cfg = _cfg(tmp_path, "loop.triggers.every_s=3600")
    assert look(cfg, {"last_cycle_at": 1000.0}, [], now=2000.0).seen == ["next scheduled in 2600 s"]
    assert look(cfg, {"last_cycle_at": 1000.0}, [], now=4700.0).reasons[0].startswith("schedule: 3700 s since")
    assert look(cfg, {"started_at": 1000.0}, [], now=2000.0).seen == ["next scheduled in 2600 s"]  # no dataset yet
    (tmp_path / "out" / "dataset").mkdir(parents=True)
    manifest = make_manifest(["c"], {"train": {"c": 1}}, [1])  # ingested 2026-01-01T00:00:00+00:00
    write_manifest(str(tmp_path / "out" / "dataset"), manifest)
    before_any_cycle = look(cfg, {"started_at": 1_800_000_000.0}, [], now=1_800_000_000.0).reasons
    assert before_any_cycle == ["schedule: 32774400 s since the last cycle (loop.triggers.every_s 3600)"]
    assert look(cfg, {"last_cycle_at": 1000.0}, ["RaylaneDriftHigh firing"], now=2000.0).reasons == [
        "webhook: RaylaneDriftHigh firing"
    ]


def test_cool_down_then_budget_hold_a_due_cycle(tmp_path):
    cfg = _cfg(tmp_path, "loop.cooldown_s=600", "loop.max_cycles_per_day=2")
    now = 1_800_000_000.0
    cycles = [{"started_at": now - 3000}, {"started_at": now - 2000}]
    assert "cooling down until" in why_wait(cfg, {"cycles": cycles, "last_cycle_at": now - 100}, now)
    waited = why_wait(cfg, {"cycles": cycles, "last_cycle_at": now - 1000}, now)
    assert "2 cycles in the last 24 h, the budget" in waited and "2027-01-16 07:10:00" in waited
    old = [{"started_at": now - 90000}, {"started_at": now - 2000}]  # one is over a day old
    assert why_wait(cfg, {"cycles": old, "last_cycle_at": now - 1000}, now) == ""
