"""train_overhead: training samples/s of Ray Train (1 worker, then 2) against a plain PyTorch loop
on the same model (the default MiniLM-L6), the same tokenized data (the embedded default,
ingested once), the same batch, optimizer, collate and CPU threads. Both sides are timed per
epoch inside the loop; the last epoch (warm) is compared, so Ray's start-up (about 30 s, paid
once per run) is reported apart rather than folded into the ratio."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.harness import benchmark

EPOCHS = 2


def plain_pytorch(dataset, cfg) -> list[float]:
    """samples/s per epoch of the loop a PyTorch user writes by hand."""
    import numpy as np
    import pyarrow.dataset as pads
    import torch

    from raylane.models import load_classifier, load_tokenizer
    from raylane.train.batches import PadCollate
    from raylane.train.optim import build_optimizer

    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(int(cfg.resources.cpus_per_worker))
    table = pads.dataset(dataset.split_uri("train"), format="parquet").to_table(columns=["input_ids", "label"])
    ids = table.column("input_ids").to_pylist()
    labels = np.asarray(table.column("label").to_pylist())
    model = load_classifier(cfg.model.name_or_path, dataset.label_names)
    optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    collate = PadCollate(pad_id=load_tokenizer(cfg.model.name_or_path).pad_token_id or 0)
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(EPOCHS):
        model.train()
        order = rng.permutation(len(ids))
        started = time.perf_counter()
        for start in range(0, len(order), cfg.train.batch_size):
            rows = order[start : start + cfg.train.batch_size]
            batch = collate({"input_ids": np.asarray([ids[i] for i in rows], dtype=object), "label": labels[rows]})
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        rates.append(len(ids) / (time.perf_counter() - started))
    return rates


def ray_train(dataset, cfg, name: str) -> tuple[list[float], float]:
    """(samples/s per epoch as the loop logged them, wall seconds of the whole fit)."""
    from mlflow import MlflowClient

    from raylane.tracking import start_run
    from raylane.train.driver import fit

    started = time.perf_counter()
    with start_run(cfg, name) as run:
        fit(cfg, dataset, run, name=name)
    wall = time.perf_counter() - started
    history = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, "samples_per_s")
    return [m.value for m in sorted(history, key=lambda m: m.step)], wall


@benchmark(
    "train_overhead",
    "training samples/s: Ray Train (1 worker) vs a plain PyTorch loop, same model/data/batch",
    goal=">= 0.97",
)
def overhead(quick: bool) -> dict:
    from raylane.config import load_config
    from raylane.ingest.stage import run_ingest
    from raylane.runtime import init_ray

    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        common = [f"output_dir={Path(tmp)}", f"train.epochs={EPOCHS}", "train.checkpoints_to_keep=1"]
        if quick:
            common += ["data.max_length=32"]
        one = load_config(None, [*common, "resources.num_workers=1", "resources.cpus_per_worker=2"])
        two = load_config(None, [*common, "resources.num_workers=2", "resources.cpus_per_worker=1"])
        dataset = run_ingest(one).dataset
        ours, ours_wall = ray_train(dataset, one, "bench-1-worker")
        baseline = plain_pytorch(dataset, one)
        pair, pair_wall = ray_train(dataset, two, "bench-2-workers")
    return {
        "ours": round(ours[-1], 2),
        "baseline": round(baseline[-1], 2),
        "ratio": round(ours[-1] / baseline[-1], 3),
        "unit": "samples/s (last of 2 epochs, MiniLM-L6, batch 32, 2 CPU threads)",
        "samples_per_s_by_epoch": {
            "ray_1_worker": [round(x, 2) for x in ours],
            "plain_pytorch": [round(x, 2) for x in baseline],
            "ray_2_workers": [round(x, 2) for x in pair],
        },
        "note_2_workers": f"2 workers x 1 CPU: {pair[-1]:.2f} samples/s (ratio {pair[-1] / baseline[-1]:.3f} to the "
        f"plain loop on 2 threads)",
        "note_wall": f"whole fit incl. Ray Train start-up: {ours_wall:.0f} s (1 worker), {pair_wall:.0f} s (2 workers)",
    }
