"""The ingest stage: source shards in, tokenized Parquet splits and a manifest out."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.data
from ray.data.expressions import col

from ingest.tokenize import TokenizeBatch
from ingest.transforms import ACCEPTED, mark_unknown_labels, prepare_batch
from raylane.config import PipelineConfig
from raylane.dataset import SPLITS, DatasetInfo, write_manifest
from raylane.sources import check_columns, read_source
from raylane.tracking import RunRef


@dataclass(frozen=True)
class IngestResult:
    dataset: DatasetInfo

    @property
    def counts(self) -> dict[str, Any]:
        return self.dataset.manifest["counts"]


def _prepared(cfg: PipelineConfig, source: str, split: str | None):
    ds = read_source(source, cfg.data)
    check_columns(ds, source, cfg.data)
    has_test_source = bool(cfg.data.test_source)
    return ds.map_batches(
        prepare_batch,
        batch_format="pandas",
        fn_kwargs=dict(
            text_fields=cfg.data.text_fields,
            label_field=cfg.data.label_field,
            val_fraction=cfg.data.val_fraction,
            test_fraction=0.0 if has_test_source else cfg.data.test_fraction,
            split=split,
        ),
    )


def _table(rows: list[dict[str, Any]], keys: tuple[str, str]) -> dict[str, dict[str, int]]:
    """Rows of a two-key group-by count -> {key0: {key1: count}}."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row[keys[0]], {})[row[keys[1]]] = int(row["count()"])
    return out


def run(cfg: PipelineConfig, out_dir: Path, run: RunRef | None = None) -> IngestResult:
    started = time.time()
    # Parquet writes add files next to whatever is there: an old run's shards would double the data.
    for stale in (*SPLITS, "quarantine", "manifest.json"):
        target = out_dir / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)

    rows = _prepared(cfg, cfg.data.source, split=None)
    if cfg.data.test_source:
        rows = rows.union(_prepared(cfg, cfg.data.test_source, split="test"))
    # Text-only rows are small; keeping them in the object store (not on the driver) lets the
    # counts, the label scan and the writes below share one read of the source.
    rows = rows.materialize()

    seen = rows.filter(expr=(col("reason") == ACCEPTED) & (col("split") != "test"))
    label_names = sorted(seen.unique("label"))
    if len(label_names) < 2:
        raise ValueError(f"{cfg.data.source}: need at least 2 labels to classify, found {label_names}")
    rows = rows.map_batches(mark_unknown_labels, batch_format="pandas", fn_kwargs={"label_names": label_names})
    rows = rows.materialize()
    input_count = rows.count()  # prepare_batch maps rows one to one: this is the number read

    by_reason = _table(rows.groupby(["split", "reason"]).count().take_all(), ("reason", "split"))
    quarantine = rows.filter(expr=col("reason") != ACCEPTED)
    if by_reason.keys() - {ACCEPTED}:
        quarantine.drop_columns(["split"]).write_parquet(str(out_dir / "quarantine"))

    accepted = rows.filter(expr=col("reason") == ACCEPTED).drop_columns(["reason", "raw"])
    class_counts = _table(accepted.groupby(["split", "label"]).count().take_all(), ("split", "label"))
    tokenized = accepted.map_batches(
        TokenizeBatch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.resources.tokenize_actors),
        fn_constructor_kwargs=dict(
            model_name_or_path=cfg.model.name_or_path, max_length=cfg.data.max_length, label_names=label_names
        ),
    ).materialize()
    for split in SPLITS:
        tokenized.filter(expr=col("split") == split).drop_columns(["split"]).write_parquet(
            str(out_dir / split)
        )

    accepted_count = sum(by_reason.get(ACCEPTED, {}).values())
    reasons = {reason: sum(c.values()) for reason, c in by_reason.items() if reason != ACCEPTED}
    manifest = {
        "format_version": 1,
        "sources": {"data": cfg.data.source, "test": cfg.data.test_source},
        "config_digest": cfg.digest("data", "model"),
        "tokenizer": cfg.model.name_or_path,
        "max_length": cfg.data.max_length,
        "text_fields": cfg.data.text_fields,
        "label_field": cfg.data.label_field,
        "labels": label_names,
        "counts": {
            "input": input_count,
            "accepted": accepted_count,
            "quarantined": sum(reasons.values()),
            "quarantine_reasons": reasons,
        },
        "splits": {s: by_reason.get(ACCEPTED, {}).get(s, 0) for s in SPLITS},
        "class_counts": {s: class_counts.get(s, {}) for s in SPLITS},
        "elapsed_s": round(time.time() - started, 2),
    }
    write_manifest(out_dir, manifest)
    if run:
        counts = manifest["counts"]
        run.log_metrics(
            {
                "rows_input": counts["input"],
                "rows_accepted": counts["accepted"],
                "rows_quarantined": counts["quarantined"],
                **{f"rows_{s}": n for s, n in manifest["splits"].items()},
            }
        )
        run.log_artifact(out_dir / "manifest.json")
    return IngestResult(DatasetInfo(str(out_dir.resolve()), manifest))
