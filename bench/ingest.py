"""ingest_throughput and ingest_memory: the ingest stage on SST-2 train (67k sentences, read from
../shared/data/sst2, never committed) or, where that is absent, synthetic data of the same size.

ingest_throughput: rows/s of `ingest.stage.run` (Ray Data, all CPUs) against a single-process
pandas + tokenizer loop doing the same work with the same pure functions (clean, mask PII,
validate, dedup, split, tokenize, write Parquet), alternating in one process.

ingest_memory: peak memory of a whole `python -m raylane ingest` process tree (driver, Ray's
daemons and workers; proportional set size, so shared object-store pages count once) at 8x the
data against 1x.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import REPO_ROOT
from bench.harness import benchmark, side_by_side

SST2 = REPO_ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"
SST2_ROWS = 67349
FIELDS = [
    "data.text_fields=[sentence]",
    "data.label_field=label",
    "data.test_source=",
    "data.val_fraction=0.1",
    "data.test_fraction=0.1",
]


def source_file(directory: Path, rows: int | None = None) -> tuple[Path, str]:
    """SST-2 train (first `rows`), else synthetic sentences of similar length; (path, what it is)."""
    target = directory / "train.tsv"
    if SST2.is_file():
        lines = SST2.read_text().splitlines(keepends=True)
        target.write_text("".join(lines[: (rows or SST2_ROWS) + 1]))
        return target, f"SST-2 train from {SST2}"
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    body = [
        f"{' '.join(rng.choices(words, k=rng.randint(3, 30)))}\t{rng.randint(0, 1)}\n" for _ in range(rows or SST2_ROWS)
    ]
    target.write_text("sentence\tlabel\n" + "".join(body))
    return target, "synthetic (SST-2 not found)"


def baseline_ingest(source: Path, out: Path, fast_tokenizer: bool = False) -> int:
    """What a careful notebook does, in one process: the same transforms, row by row."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raylane.config import DEFAULT_MODEL
    from raylane.hashing import stable_fraction
    from raylane.ingest.transforms import normalize
    from raylane.models import load_tokenizer
    from raylane.pii import PII_KINDS, mask_pii

    frame = pd.read_csv(source, sep="\t", dtype=str, keep_default_na=False)
    seen, kept = set(), []
    for sentence, label in zip(frame["sentence"], frame["label"]):
        text, _ = mask_pii(normalize(sentence), PII_KINDS)
        if not text or not label or len(text) > 20000 or text in seen:
            continue
        seen.add(text)
        kept.append((text, label, stable_fraction(text)))
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    if fast_tokenizer:
        backend = tokenizer.backend_tokenizer
        backend.enable_truncation(128)

        def encode(texts):
            return [e.ids for e in backend.encode_batch_fast(texts)]
    else:

        def encode(texts):
            return tokenizer(texts, truncation=True, max_length=128)["input_ids"]

    label_ids = {name: i for i, name in enumerate(sorted({k[1] for k in kept}))}
    out.mkdir(parents=True, exist_ok=True)
    for split, low, high in (("test", 0.0, 0.1), ("val", 0.1, 0.2), ("train", 0.2, 1.0)):
        rows = [k for k in kept if low <= k[2] < high]
        ids: list[list[int]] = []
        for start in range(0, len(rows), 1000):
            ids.extend(encode([r[0] for r in rows[start : start + 1000]]))
        pq.write_table(
            pa.table(
                {
                    "text": [r[0] for r in rows],
                    "label": [label_ids[r[1]] for r in rows],
                    "input_ids": pa.array(ids, pa.list_(pa.int32())),
                    "length": [len(x) for x in ids],
                }
            ),
            out / f"{split}.parquet",
        )
    return len(frame)


@benchmark(
    "ingest_throughput",
    "ingest + tokenize rows/s on SST-2 train: Ray Data vs a single-process pandas loop",
    goal=">= 1.7x on 2 CPUs",
)
def throughput(quick: bool) -> dict:
    from raylane.config import load_config
    from raylane.ingest.stage import run_ingest
    from raylane.runtime import init_ray

    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        source, what = source_file(tmp_path, 10000 if quick else None)
        cfg = load_config(None, [*FIELDS, f"data.source={source}", f"output_dir={tmp_path / 'ours'}"])
        rows = {}

        def ours() -> float:
            started = time.perf_counter()
            rows["ours"] = run_ingest(cfg, force=True).counts.input
            return time.perf_counter() - started

        def baseline() -> float:
            started = time.perf_counter()
            rows["baseline"] = baseline_ingest(source, tmp_path / "baseline")
            return time.perf_counter() - started

        def baseline_fast() -> float:
            started = time.perf_counter()
            baseline_ingest(source, tmp_path / "baseline-fast", fast_tokenizer=True)
            return time.perf_counter() - started

        times = side_by_side(ours, baseline, rounds=1 if quick else 3)
        fast = baseline_fast()
        # The same rows as 8 shard files: files are pass one's unit of parallelism.
        shards = tmp_path / "shards"
        shards.mkdir()
        header, *body = source.read_text().splitlines(keepends=True)
        for k in range(8):
            (shards / f"part-{k}.tsv").write_text(header + "".join(body[k::8]))
        sharded_cfg = load_config(None, [*FIELDS, f"data.source={shards}", f"output_dir={tmp_path / 'sharded'}"])
        started = time.perf_counter()
        run_ingest(sharded_cfg, force=True)
        sharded = time.perf_counter() - started
        assert rows["ours"] == rows["baseline"], rows
        n = rows["ours"]
    return {
        "ours": round(n / times["ours"], 1),
        "baseline": round(n / times["baseline"], 1),
        "ratio": round(times["baseline"] / times["ours"], 3),
        "unit": "rows/s",
        "rows": n,
        "data": what,
        "seconds_ours": [round(t, 2) for t in times["ours_runs"]],
        "seconds_baseline": [round(t, 2) for t in times["baseline_runs"]],
        "note_sharded": f"{sharded:.2f} s for the same rows as 8 shard files (ratio {times['baseline'] / sharded:.3f})",
        "note_fast_tokenizer_baseline": (
            f"{fast:.2f} s for the same loop calling the Rust tokenizer directly, as ours does "
            f"(ratio {fast / times['ours']:.3f})"
        ),
    }


def _tree_pss(root: int) -> int:
    import psutil

    total = 0
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def peak_memory(args: list[str]) -> tuple[int, float]:
    """(peak PSS of the process tree in bytes, seconds) for one CLI run in a fresh Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "raylane", "ingest", "--force", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_pss(proc.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    if code != 0:
        raise RuntimeError(f"ingest exited {code}: {args}")
    return peak, time.time() - started


@benchmark(
    "ingest_memory", "peak memory (PSS of driver + Ray processes) of ingest at 8x the data vs 1x", goal="<= 1.25x"
)
def memory(quick: bool) -> dict:
    scale = 2 if quick else 8
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "src").mkdir()
        one, what = source_file(tmp_path / "src", 10000 if quick else None)
        many = tmp_path / "many"
        many.mkdir()
        header, *body = one.read_text().splitlines(keepends=True)
        for k in range(scale):  # distinct copies, or dedup would quarantine 7 in 8 rows
            (many / f"part-{k}.tsv").write_text(
                header + "".join(f"{line.split(chr(9))[0]} #{k}\t{line.split(chr(9))[1]}" for line in body)
            )
        common = [*FIELDS, f"output_dir={tmp_path / 'out'}"]
        small, small_s = peak_memory([*common, f"data.source={one}"])
        large, large_s = peak_memory([*common, f"data.source={many}"])
    rows = len(body)
    return {
        "ours": round(large / 2**20, 1),
        "baseline": round(small / 2**20, 1),
        "ratio": round(large / small, 3),
        "unit": f"MiB peak PSS ({scale}x vs 1x)",
        "data": what,
        "rows_1x": rows,
        "seconds_1x": round(small_s, 1),
        f"seconds_{scale}x": round(large_s, 1),
        f"note_rows_per_s_{scale}x": f"{rows * scale / large_s:.0f} rows/s end to end incl. Ray start vs "
        f"{rows / small_s:.0f} at 1x",
    }
