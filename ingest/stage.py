"""The ingest stage: source shards in; tokenized Parquet splits, quarantined rows and a manifest out.

Three streaming passes, none of which brings the data to the driver:
  1. read + clean + mask + validate every row, and tokenize the rows accepted so far
     (`raylane.tokenize`: in the same tasks, or an actor pool) -> `_staging/` Parquet;
  2. the driver streams a few key columns of `_staging/` and decides duplicates, conflicting
     labels, the label set and split thresholds (`plan.build_plan`);
  3. apply those verdicts per block (tasks) -> `quarantine/` and `split=train|val|test/`.
The written row counts are checked against the plan before the manifest is written.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import pickle
import time
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import ray.data

from raylane.config import PipelineConfig
from raylane.dataset import SPLITS, DatasetInfo
from raylane.ingest.accounting import cached_dataset_problem, check_quarantine_share, read_stats, reconcile
from raylane.ingest.inputs import FORMAT_VERSION, config_digest, source_digest, source_tasks
from raylane.ingest.plan import INDEX_COLUMNS, RowIndex, Verdicts, build_plan
from raylane.ingest.reader import FileTask, ReadOptions, read_files
from raylane.ingest.transforms import RowSpec, prepare_batch
from raylane.ingest.writer import QUARANTINE, write_group
from raylane.manifest import (
    MANIFEST,
    Counts,
    Manifest,
    PiiStats,
    SourceFile,
    TextPreparation,
    TokenizerRef,
    read_manifest,
    remove_manifest,
    write_manifest,
)
from raylane.redact import redact, redacted
from raylane.sources import filesystem, join
from raylane.tasks import get_task
from raylane.tracking import RunRef

STAGING = "_staging"
READS = "_reads"  # each read task's ReadStats, for the line accounting
STAGING_ROWS_PER_FILE = 16_384
# A file shares its reading with other tasks only above this size, and with at most this many.
PART_MIN_BYTES, MAX_PARTS = 2**20, 8
_OUTPUTS = (STAGING, READS, QUARANTINE, *(f"split={s}" for s in SPLITS), *SPLITS)  # the last: format 1 layout


@dataclass(frozen=True)
class IngestResult:
    dataset: DatasetInfo
    cached: bool = False

    @property
    def counts(self) -> Counts:
        return self.dataset.manifest.counts


def output_uri(cfg: PipelineConfig) -> str:
    return cfg.data.output_uri or str(cfg.output_path / "dataset")


def _clear(out: str) -> None:
    """Remove what an earlier ingest wrote (Parquet writes add files next to old ones); leave
    anything else in the directory alone. The manifest goes first: interrupted halfway, this
    leaves shards without a manifest, which no later run trusts."""
    remove_manifest(out)
    fs, root = filesystem(out)
    for name in _OUTPUTS:
        if fs.get_file_info(join(root, name)).type == pafs.FileType.Directory:
            fs.delete_dir(join(root, name))
    fs.create_dir(root, recursive=True)


def _scan(uri: str, columns: list[str]):
    """Record batches of a few columns of a Parquet directory, streamed to the driver."""
    import pyarrow.dataset as pads

    fs, path = filesystem(uri)
    return pads.dataset(path, filesystem=fs, format="parquet").to_batches(columns=columns)


def _parquet_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """The Parquet files directly under a directory (none if it does not exist), sorted."""
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return fs, sorted(i.path for i in infos if i.path.endswith(".parquet"))


def _row_count(uri: str) -> int:
    import pyarrow.dataset as pads

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return 0
    return pads.dataset(path, filesystem=fs, format="parquet").count_rows()


def _tokenizer_pool(actors: int) -> float:
    """CPUs per tokenizer actor. The actors must leave a whole CPU free on every node for the
    read, filter and write tasks around them, or the CPUs are held by idle tokenizers and the job
    deadlocks: on a small machine, and on a cluster of small nodes, where leftovers scattered
    across nodes add up to a CPU but no node has one, or where a Serve replica already holds one.
    With nothing to spare, actors take no CPU and share with the tasks."""
    node_cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]]
    node_cpus = [c for c in node_cpus if c > 0] or [1.0]
    # What others hold (a Serve replica, another job) is not ours to count on.
    free = min(sum(node_cpus), ray.available_resources().get("CPU", 0.0))
    spare = int(free) - len(node_cpus)  # one CPU kept free per node
    if spare <= 0:
        return 0.0
    return round(min(1.0, max(0.1, spare / actors)), 2)


def _encoded(prepared: ray.data.Dataset, cfg: PipelineConfig, encoder) -> ray.data.Dataset:
    """Prepared rows -> the same encoded for the model (token ids), in the read tasks or in an
    actor pool; as they are when the task encodes nothing at ingest (images)."""
    if encoder is None:
        return prepared
    function, kwargs, actor, _ = encoder
    actors = cfg.resources.tokenize_actors
    if not actors:
        return prepared.map_batches(function, batch_format="pyarrow", fn_kwargs=kwargs)
    return prepared.map_batches(
        actor,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=_tokenizer_pool(actors),
        fn_constructor_kwargs=kwargs,
    )


@contextlib.contextmanager
def _every_cpu_for_every_operator():
    """Turn off Ray Data's per-operator resource reservation for the executions inside.

    It splits the cluster's CPUs between the operators of an execution up front; on 2 CPUs that
    left the read operator one CPU, so two read tasks ran one after the other (measured: 2 x 1 s
    of work took 2.07 s with it, 1.06 s without). Ingest's executions are chains of tasks with no
    actor pool by default, so no operator can hold CPUs another one waits for. The setting is
    global to the driver's DataContext, so it is put back afterwards."""
    ctx = ray.data.DataContext.get_current()
    saved, ctx.op_resource_reservation_enabled = ctx.op_resource_reservation_enabled, False
    try:
        yield
    finally:
        ctx.op_resource_reservation_enabled = saved


def _split_files(tasks: list[FileTask]) -> list[FileTask]:
    """Share big files among read tasks when there are fewer files than CPUs: one big file
    would otherwise be read, cleaned, masked and tokenized by a single task (see `FileTask`)."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    per_file = max(1, min(MAX_PARTS, cpus // len(tasks)))
    return [
        replace(t, part=k, parts=n)
        for t in tasks
        for n in [max(1, min(per_file, t.file.size // PART_MIN_BYTES))]
        for k in range(n)
    ]


def run_ingest(
    cfg: PipelineConfig, mlflow_run: RunRef | None = None, force: bool = False, tasks: list[FileTask] | None = None
) -> IngestResult:
    """Ingest `cfg.data`; `tasks` are its checked input files when the caller already has them."""
    started = time.time()
    out = output_uri(cfg)
    data = cfg.data
    tasks = tasks if tasks is not None else source_tasks(cfg)  # whole-file problems fail here, in seconds
    hashed = [t.file.digest_and_lines() for t in tasks]
    files = [
        SourceFile(uri=redact(t.file.uri), role=t.role, format=t.file.format, size=t.file.size, sha256=sha256)
        for t, (sha256, _) in zip(tasks, hashed)
    ]
    task = get_task(cfg.task)
    encoder = task.inputs.encoder(cfg.model.name_or_path, data.max_length)
    encoder_digest = encoder[3] if encoder else task.inputs.kind
    digests = {"source_digest": source_digest(files), "config_digest": config_digest(cfg, encoder_digest)}

    previous = read_manifest(out)
    if not force and previous and all(getattr(previous, k) == v for k, v in digests.items()):
        problem = cached_dataset_problem(out, previous)
        if problem is None:
            print(f"ingest: reusing {redact(out)} (same source and config digests; --force reruns)")
            if mlflow_run:
                mlflow_run.set_tags({"ingest.cached": "true"})
                log_to_mlflow(mlflow_run, DatasetInfo(out, previous))
            return IngestResult(DatasetInfo(out, previous), cached=True)
        print(f"ingest: not reusing {redact(out)}: {problem}; ingesting again")

    _clear(out)
    print(f"ingest: {len(files)} file(s), {sum(f.size for f in files) / 2**20:.1f} MiB -> {redact(out)}")
    spec = RowSpec(
        n_input_fields=len(task.inputs.fields(data)),
        task=cfg.task,
        label_separator=data.label_separator,
        max_image_pixels=data.max_image_pixels,
        has_id=bool(data.id_field),
        lowercase=data.lowercase,
        max_chars=data.max_chars,
        pii_kinds=tuple(data.mask_pii),
        labels=tuple(data.labels),
        prompt_template=data.prompt_template,
        field_names=tuple(task.inputs.fields(data)),
        label_field=data.label_field,
    )
    staging, reads = join(out, STAGING), join(out, READS)
    columns = [*task.inputs.fields(data), data.label_field] + ([data.id_field] if data.id_field else [])
    with _every_cpu_for_every_operator():
        _prepare(cfg, _split_files(tasks), columns, spec, staging, reads, encoder)
        index, verdicts = _decide(cfg, spec, staging)
        files = reconcile(tasks, files, [lines for _, lines in hashed], read_stats(reads), index, data.encoding)
        _write(cfg, out, staging, verdicts, index.accepted_chars)
    fs, root = filesystem(out)
    fs.delete_dir(join(root, STAGING))
    fs.delete_dir(join(root, READS))
    # The shards and the quarantine are written (to look at); without a manifest, nothing trusts them.
    check_quarantine_share(verdicts.counts, files, data.max_quarantine_fraction, redact(join(out, QUARANTINE)))

    manifest = Manifest(
        format_version=FORMAT_VERSION,
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **digests,
        sources=files,
        tokenizer=TokenizerRef(name_or_path=redact(cfg.model.name_or_path), digest=encoder_digest),
        **_describe(cfg, out, verdicts, files),
        elapsed_s=round(time.time() - started, 2),
    )
    write_manifest(out, manifest)  # last: its presence says the shards beside it are complete
    dataset = DatasetInfo(out, manifest)
    if mlflow_run:
        log_to_mlflow(mlflow_run, dataset)
    return IngestResult(dataset)


def _prepare(
    cfg: PipelineConfig,
    tasks: list[FileTask],
    columns: list[str],
    spec: RowSpec,
    staging: str,
    reads: str,
    encoder,
) -> None:
    """Pass 1: read, clean, mask, validate and tokenize every row; one read task per file or
    part of a file, each reporting what it read to `reads`."""
    fs, reads_path = filesystem(reads)
    fs.create_dir(reads_path, recursive=True)
    read_kwargs = {"fields": columns, "options": ReadOptions.of(cfg.data), "stats_dir": reads_path, "fs": fs}
    # A task per file (or part of one); thousands of small files (an image folder) share blocks,
    # since a Ray task per image would cost more than reading it.
    blocks = min(len(tasks), 4 * int(ray.cluster_resources().get("CPU", 1)))
    prepared = (
        # Each task travels pickled in a binary column: an object column would make Ray Data warn
        # that it falls back to pickling it anyway.
        ray.data.from_items([{"task": pickle.dumps(t)} for t in tasks], override_num_blocks=blocks)
        .map_batches(read_files, batch_size=None, batch_format="numpy", fn_kwargs=read_kwargs)
        .map_batches(prepare_batch, batch_format="pyarrow", fn_kwargs={"spec": spec})
    )
    _encoded(prepared, cfg, encoder).write_parquet(
        # Small staging files: pass three hands them out in runs of about a shard, so they bound
        # how finely its work can be split.
        staging,
        max_rows_per_file=STAGING_ROWS_PER_FILE,
    )


def _decide(cfg: PipelineConfig, spec: RowSpec, staging: str) -> tuple[RowIndex, Verdicts]:
    """Pass 2: whole-dataset verdicts, from the key columns only."""
    data = cfg.data
    index = RowIndex(pii_kinds=spec.pii_kinds)
    for batch in _scan(staging, INDEX_COLUMNS + [f"pii_{k}" for k in spec.pii_kinds]):
        index.add(batch)
    # The driver imported pyarrow before raylane.runtime could pick its allocator: hand the
    # scan's buffers back now rather than keep them for the rest of the run.
    pa.default_memory_pool().release_unused()
    verdicts = build_plan(
        index,
        labels=spec.labels,
        dedup=data.dedup,
        stratify=data.stratify,
        val_fraction=data.val_fraction,
        test_fraction=0.0 if data.test_source else data.test_fraction,
        source=data.source,
        task=cfg.task,
    )
    return index, verdicts


def _write(cfg: PipelineConfig, out: str, staging: str, verdicts: Verdicts, accepted_chars: int) -> None:
    """Pass 3: apply the verdicts to the staged rows, streaming the rejects to quarantine/ and
    the accepted, already tokenized rows to split=*/ (`ingest.writer`); then check the written
    row counts against the plan."""
    counts = verdicts.counts
    bytes_per_row = 24 + 2 * accepted_chars / max(1, counts["accepted"])  # text + ~1 token id per 2 chars
    shard_rows = max(1, int(cfg.data.shard_mb * 2**20 / bytes_per_row))
    fs, parts = _parquet_files(staging)
    # One task per run of consecutive staging files holding about a shard of accepted rows, so
    # each task writes about a shard per split.
    groups = max(1, min(len(parts), math.ceil(counts["accepted"] / shard_rows)))
    runs = [parts[k * len(parts) // groups : (k + 1) * len(parts) // groups] for k in range(groups)]
    _, root = filesystem(out)
    ray.data.from_items(
        [{"group": k, "paths": "\n".join(run)} for k, run in enumerate(runs)], override_num_blocks=groups
    ).map_batches(
        write_group,
        batch_size=1,
        batch_format="numpy",
        fn_kwargs={"fs": fs, "root": root, "plan": verdicts.plan, "shard_rows": shard_rows},
    ).materialize()

    written = {s: _row_count(join(out, f"split={s}")) for s in SPLITS}
    quarantined = _row_count(join(out, QUARANTINE))
    if written != counts["splits"] or quarantined != counts["quarantined"]:
        raise RuntimeError(
            f"ingest wrote {written} + {quarantined} quarantined rows, but planned "
            f"{counts['splits']} + {counts['quarantined']}: output is incomplete"
        )


def _describe(cfg: PipelineConfig, out: str, verdicts: Verdicts, files: list[SourceFile]) -> dict[str, Any]:
    """The manifest's account of the data: counts, label map, the inputs and the target per
    split, PII, layout."""
    data, counts = cfg.data, verdicts.counts
    inputs = get_task(cfg.task).inputs
    label_names = list(verdicts.plan.labels)
    per_split: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        field, stats = inputs.split_stats(lambda names, s=split: _scan(join(out, f"split={s}"), names), data.max_length)
        per_split.setdefault(field, {})[split] = stats
    return {
        "task": cfg.task,
        "max_length": data.max_length,
        "text_fields": data.text_fields,
        "label_field": data.label_field,
        "preparation": TextPreparation(lowercase=data.lowercase, mask_pii=list(data.mask_pii)),
        "labels": label_names,
        "label2id": {name: i for i, name in enumerate(label_names)},
        "counts": Counts(
            **{k: counts[k] for k in ("input", "accepted", "quarantined", "quarantine_reasons")},
            lines=sum(f.lines or 0 for f in files),
        ),
        "splits": counts["splits"],
        "class_counts": counts["class_counts"],
        **per_split,
        "target_stats": counts["target_stats"],
        "pii": PiiStats(masked_kinds=list(data.mask_pii), counts=counts["pii"]),
        "shards": {s: len(_parquet_files(join(out, f"split={s}"))[1]) for s in SPLITS},
        "columns": inputs.columns,
        "config": redacted(cfg.to_dict()["data"]),
    }


def log_to_mlflow(mlflow_run: RunRef, dataset: DatasetInfo) -> None:
    m = dataset.manifest
    counts = m.counts
    mlflow_run.log_metrics(
        {
            "rows_input": counts.input,
            "rows_accepted": counts.accepted,
            "rows_quarantined": counts.quarantined,
            **{f"rows_quarantined_{r}": n for r, n in counts.quarantine_reasons.items()},
            **{f"rows_{s}": n for s, n in m.splits.items()},
            **{f"pii_masked_{k}": n for k, n in m.pii.counts.items()},
            **({"token_length_p95_train": m.token_lengths["train"].p95} if m.token_lengths else {}),
            **({"image_brightness_mean_train": m.image_stats["train"].brightness_mean} if m.image_stats else {}),
            **({"target_mean_train": m.target_stats["train"]["mean"]} if m.target_stats else {}),
            "ingest_seconds": m.elapsed_s,
            "rows_per_second": counts.input / max(m.elapsed_s, 1e-9),
        }
    )
    mlflow_run.log_text(m.to_json(), MANIFEST)
    dataset.log_inputs(mlflow_run)


def format_summary(result: IngestResult) -> str:
    """The table `python -m raylane ingest` ends with."""
    m = result.dataset.manifest
    c = m.counts
    literal = sum(f.literal_records for f in m.sources)
    rows = [
        (
            "lines read",
            f"{c.lines}  ({sum(f.records for f in m.sources)} records, "
            f"{sum(f.header_lines + f.blank_lines for f in m.sources)} header/blank lines)",
        )
    ]
    rows += [("rows read", c.input), ("accepted", c.accepted), ("quarantined", c.quarantined)]
    rows += [(f"  {reason}", n) for reason, n in sorted(c.quarantine_reasons.items(), key=lambda kv: -kv[1])]
    rows += [(f"split {s}", f"{n}  {_split_summary(m, s)}".rstrip()) for s, n in m.splits.items()]
    if literal:
        rows += [("stray quotes", f"{literal} line(s) read with the quote as an ordinary character")]
    rows += [("PII masked", ", ".join(f"{k} {n}" for k, n in m.pii.counts.items() if n) or "none")]
    if m.token_lengths:
        lengths = m.token_lengths["train"]
        rows += [("tokens (train)", f"p50 {lengths.p50}, p95 {lengths.p95}, max {lengths.max}")]
    if m.image_stats:
        images = m.image_stats["train"]
        rows += [
            (
                "images (train)",
                f"{images.width_p50}x{images.height_p50} px (p50), brightness {images.brightness_mean:.0f}/255",
            )
        ]
    rows += [("time", f"{m.elapsed_s:.1f} s" + ("  (cached)" if result.cached else ""))]
    rows += [("output", redact(result.dataset.uri))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _split_summary(m: Manifest, split: str) -> str:
    """Rows per class, or a numeric target's range (nothing for free-text answers)."""
    stats = m.target_stats.get(split)
    if stats is not None:
        return (
            f"target mean {stats['mean']:.3g}, std {stats['std']:.3g}, range [{stats['min']:.3g}, {stats['max']:.3g}]"
        )
    counts = dict(m.class_counts[split])
    return str(counts) if counts else ""
