"""Training benchmarks on the embedded default (configs/default.yaml: MiniLM-L6, Made-With-ML's
656 training rows, batch 32, one worker with 2 CPU threads), ingested once per benchmark.

train_overhead: training samples/s of Ray Train (1 worker, `raylane.train.driver.fit`) against
the loop a PyTorch user writes by hand, on the same model, tokenized rows, batch, optimizer and
threads, both in fp32 with random batches (the work must be the same on both sides). Each side
trains 2 epochs per round and its last (warm) epoch counts; the sides alternate for 3 rounds
(1 with --quick) and the medians are compared. Ray Train's start-up (seconds, once per run) is
reported apart.

train_cpu_speed: the default config's training samples/s with the defaults as shipped (precision
auto, which is bf16 autocast on a CPU with native bf16; train.group_by_length as configured)
against fp32 with random batches, the same data and steps, for 3 seeds, the sides alternating; each trained to the end
with `fit` and scored on the holdout (the test split) by the evaluate stage, so the quality
figures are the pipeline's own. The rate is the median of the per-epoch rates after the first,
then of the seeds; quality is the mean holdout weighted F1 over the seeds.

train_cpu_ablation: the two changes apart, on the same seeds: bf16 autocast with random batches
against fp32 with length-grouped batches, so that with train_cpu_speed's sides (both; neither)
each change's effect on speed and on holdout F1 can be read off.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import benchmark

OVERHEAD_EPOCHS = 2
FP32_RANDOM = ["train.precision=fp32", "train.group_by_length=false"]


def _ingested(tmp: str, overrides: list[str]):
    from raylane.config import load_config
    from raylane.ingest.stage import run_ingest

    cfg = load_config(None, [f"output_dir={Path(tmp)}", "sweep.enabled=false", *overrides])
    return cfg, run_ingest(cfg).dataset


def plain_pytorch(dataset, cfg, epochs: int) -> list[float]:
    """samples/s per epoch of a hand-written loop: random batches padded to their longest row."""
    import numpy as np
    import pyarrow.dataset as pads
    import torch

    from raylane.models import load_classifier, load_tokenizer
    from raylane.tasks import get_task
    from raylane.train.optim import build_optimizer

    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(int(cfg.resources.cpus_per_worker))
    table = pads.dataset(dataset.split_uri("train"), format="parquet").to_table(columns=["input_ids", "label"])
    ids = table.column("input_ids").to_pylist()
    labels = np.asarray(table.column("label").to_pylist())
    task = get_task(cfg.task)
    model = load_classifier(cfg.model.name_or_path, dataset.label_names)
    optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    collate = task.inputs.collate(tokenizer, task.target, len(dataset.label_names), {})
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(epochs):
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


def ray_train(dataset, cfg, name: str):
    """(samples/s per epoch as the loop logged them, wall seconds of the whole fit, the result)."""
    from mlflow import MlflowClient

    from raylane.tracking import start_run
    from raylane.train.driver import fit

    started = time.perf_counter()
    with start_run(cfg, name) as run:
        result = fit(cfg, dataset, run, name=name)
    wall = time.perf_counter() - started
    history = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, "samples_per_s")
    return [m.value for m in sorted(history, key=lambda m: m.step)], wall, result


@benchmark(
    "train_overhead",
    "training samples/s: Ray Train (1 worker) vs a plain PyTorch loop, same model/data/batch, fp32, alternating rounds",
    goal=">= 0.97",
)
def overhead(quick: bool) -> dict:
    from raylane.config import load_config
    from raylane.runtime import init_ray

    init_ray()
    rounds = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        _, dataset = _ingested(tmp, ["data.max_length=32"] if quick else [])
        cfg = load_config(
            None,
            [
                f"output_dir={Path(tmp)}",
                f"train.epochs={OVERHEAD_EPOCHS}",
                "resources.num_workers=1",
                "resources.cpus_per_worker=2",
                *FP32_RANDOM,
            ],
        )
        ours, baseline, walls = [], [], []
        for i in range(rounds):
            rates, wall, _ = ray_train(dataset, cfg, f"bench-overhead-{i}")
            ours.append(rates[-1])
            walls.append(wall)
            baseline.append(plain_pytorch(dataset, cfg, OVERHEAD_EPOCHS)[-1])
    ours_median, baseline_median = statistics.median(ours), statistics.median(baseline)
    return {
        "ours": round(ours_median, 2),
        "baseline": round(baseline_median, 2),
        "ratio": round(ours_median / baseline_median, 3),
        "unit": f"samples/s (median of {rounds} alternating rounds, last of {OVERHEAD_EPOCHS} epochs, MiniLM-L6, "
        "batch 32, 2 CPU threads, fp32)",
        "rounds": {"ray_train": [round(x, 2) for x in ours], "plain_pytorch": [round(x, 2) for x in baseline]},
        "note_wall": f"whole fit incl. Ray Train start-up: median {statistics.median(walls):.0f} s",
    }


SEEDS = [42, 7, 1234]


def _train_sides(sides: dict[str, list[str]], seeds: list[int], quick: bool) -> dict[str, list[dict]]:
    """Train the default config once per seed per side (the sides alternating) and score each
    model on the holdout with the evaluate stage."""
    import torch

    from raylane.config import load_config
    from raylane.evaluate.stage import run_evaluation
    from raylane.runtime import init_ray
    from raylane.train.optim import Precision

    init_ray()
    epochs = ["train.epochs=2"] if quick else []
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        _, dataset = _ingested(tmp, [])
        for seed in seeds:
            for side, overrides in sides.items():
                cfg = load_config(
                    None,
                    [f"output_dir={Path(tmp)}", "sweep.enabled=false", f"train.seed={seed}", *epochs, *overrides],
                )
                rates, wall, result = ray_train(dataset, cfg, f"bench-cpu-{side}-{seed}")
                evaluation = run_evaluation(cfg, result.model_dir, dataset, Path(tmp) / f"eval-{side}-{seed}")
                runs[side].append(
                    {
                        "seed": seed,
                        "samples_per_s": round(statistics.median(rates[1:] or rates), 2),
                        "by_epoch": [round(r, 1) for r in rates],
                        "wall_s": round(wall, 1),
                        "holdout_weighted_f1": round(evaluation.metrics["weighted_f1"], 4),
                        "holdout_accuracy": round(evaluation.metrics["accuracy"], 4),
                        "precision": Precision(torch.device("cpu"), cfg.train.precision).name,
                        "group_by_length": cfg.train.group_by_length,
                    }
                )
    return runs


def _compared(runs: dict[str, list[dict]], ours: str, baseline: str) -> dict:
    """The common fields of two sides trained over the same seeds: median samples/s and their
    ratio, each side's mean holdout weighted F1, every seed's F1, and the runs themselves."""

    def rate(side: str) -> float:
        return statistics.median(r["samples_per_s"] for r in runs[side])

    def mean_f1(side: str) -> float:
        return round(statistics.mean(r["holdout_weighted_f1"] for r in runs[side]), 4)

    return {
        "ours": round(rate(ours), 2),
        "baseline": round(rate(baseline), 2),
        "ratio": round(rate(ours) / rate(baseline), 3),
        f"holdout_weighted_f1_{ours}_mean": mean_f1(ours),
        f"holdout_weighted_f1_{baseline}_mean": mean_f1(baseline),
        "holdout_weighted_f1_by_seed": {
            side: {r["seed"]: r["holdout_weighted_f1"] for r in runs[side]} for side in runs
        },
        "sides": runs,
    }


@benchmark(
    "train_cpu_speed",
    "the default config's training samples/s: default precision and batching vs fp32 with random batches",
    goal=">= 2.0x, holdout weighted F1 within 0.5 point",
)
def cpu_speed(quick: bool) -> dict:
    """Each side trains once per seed (train.seed: the head's weights, shuffling, dropout), the
    sides alternating; a holdout of 191 rows moves 0.5 points of weighted F1 per row or so, so one
    seed cannot tell a precision effect from the luck of the draw: the F1s are compared as means
    over the seeds, with every seed's figure beside them."""
    seeds = [42] if quick else SEEDS
    runs = _train_sides({"defaults": [], "fp32_random": FP32_RANDOM}, seeds, quick)  # defaults: as shipped
    ours, base = runs["defaults"][0], runs["fp32_random"][0]
    result = _compared(runs, "defaults", "fp32_random")
    return {
        **result,
        "unit": f"training samples/s ({ours['precision']} + group_by_length={ours['group_by_length']} vs "
        f"{base['precision']} + random batches; median epoch after the first, median over {len(seeds)} seeds; "
        "default config, 1 worker x 2 CPUs)",
        "holdout_weighted_f1_delta_points": round(
            100 * (result["holdout_weighted_f1_defaults_mean"] - result["holdout_weighted_f1_fp32_random_mean"]), 2
        ),
    }


@benchmark(
    "train_cpu_ablation",
    "which of train_cpu_speed's two changes does what: bf16 with random batches vs fp32 with length-grouped "
    "batches, same seeds",
)
def cpu_ablation(quick: bool) -> dict:
    """The two changes of train_cpu_speed apart, on its seeds: ours = bf16 autocast with random
    batches, baseline = fp32 with length-grouped batches; each side's speed and holdout weighted
    F1 to set beside train_cpu_speed's two sides (both changes; neither)."""
    seeds = [42] if quick else SEEDS
    runs = _train_sides(
        {
            "bf16_random": ["train.precision=auto", "train.group_by_length=false"],
            "fp32_grouped": ["train.precision=fp32", "train.group_by_length=true"],
        },
        seeds,
        quick,
    )

    return {
        **_compared(runs, "bf16_random", "fp32_grouped"),
        "unit": f"training samples/s (bf16 + random batches vs fp32 + length-grouped; median over {len(seeds)} "
        "seeds; default config, 1 worker x 2 CPUs)",
    }
