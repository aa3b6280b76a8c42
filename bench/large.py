"""Large-model training benchmarks on the embedded default (MiniLM-L6, Made-With-ML's 656
training rows, global batch 32), each side trained by the pipeline's own `fit`, the sides
alternating, the last (warm) epoch counted; peak memory is the run's `peak_memory_mb` (the
largest worker's peak RSS on CPU, CUDA max allocated on GPU).

train_fsdp_overhead: FSDP2 against DDP on 2 workers x 1 CPU (gloo), same model, batch, precision
and steps. A 22M-parameter model fits every worker, so FSDP can only cost here: what it shows is
the price of gathering each block's weights and reduce-scattering its gradients over gloo.

train_lora_memory: LoRA (r 8 on query and value, the head trained in full) against full
fine-tuning on 1 worker x 2 CPUs: samples/s and peak memory.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench.harness import benchmark
from bench.train import _ingested, ray_train

EPOCHS = 2


def _peak_memory(run_name: str, cfg) -> float:
    from mlflow import MlflowClient

    from raylane.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg))
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"attributes.run_name = '{run_name}'"
    )
    return max(m.value for m in client.get_metric_history(runs[0].info.run_id, "peak_memory_mb"))


def _sides(sides: dict[str, list[str]], common: list[str], rounds: int) -> dict[str, dict[str, list[float]]]:
    from raylane.config import load_config
    from raylane.runtime import init_ray

    init_ray()
    measured: dict[str, dict[str, list[float]]] = {side: {"rate": [], "peak_mb": []} for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        _, dataset = _ingested(tmp, [])
        for i in range(rounds):
            for side, overrides in sides.items():
                cfg = load_config(None, [f"output_dir={Path(tmp)}", f"train.epochs={EPOCHS}", *common, *overrides])
                name = f"bench-{side}-{i}"
                rates, _, _ = ray_train(dataset, cfg, name)
                measured[side]["rate"].append(round(rates[-1], 2))
                measured[side]["peak_mb"].append(round(_peak_memory(name, cfg)))
    return measured


def _summary(measured: dict, ours: str, baseline: str) -> dict:
    rate = {side: statistics.median(m["rate"]) for side, m in measured.items()}
    peak = {side: max(m["peak_mb"]) for side, m in measured.items()}
    return {
        "ours": round(rate[ours], 2),
        "baseline": round(rate[baseline], 2),
        "ratio": round(rate[ours] / rate[baseline], 3),
        f"peak_memory_mb_{ours}": peak[ours],
        f"peak_memory_mb_{baseline}": peak[baseline],
        "rounds": measured,
    }


@benchmark(
    "train_fsdp_overhead",
    "training samples/s: FSDP2 vs DDP, 2 workers x 1 CPU (gloo), default model and batch, alternating",
)
def fsdp_overhead(quick: bool) -> dict:
    rounds = 1 if quick else 2
    common = ["resources.num_workers=2", "resources.cpus_per_worker=1"]
    measured = _sides({"fsdp": ["train.strategy=fsdp"], "ddp": ["train.strategy=ddp"]}, common, rounds)
    return {
        **_summary(measured, "fsdp", "ddp"),
        "unit": f"samples/s (last of {EPOCHS} epochs, median of {rounds} alternating rounds; MiniLM-L6, global "
        "batch 32, 2 workers x 1 CPU, default precision); peak memory: the larger worker's peak RSS",
    }


@benchmark(
    "train_lora_memory",
    "LoRA vs full fine-tuning: training samples/s and peak memory, default model, 1 worker x 2 CPUs, alternating",
)
def lora_memory(quick: bool) -> dict:
    rounds = 1 if quick else 2
    common = ["resources.num_workers=1", "resources.cpus_per_worker=2"]
    measured = _sides({"lora": ["train.peft=lora"], "full": ["train.peft=none"]}, common, rounds)
    return {
        **_summary(measured, "lora", "full"),
        "unit": f"samples/s (last of {EPOCHS} epochs, median of {rounds} alternating rounds; MiniLM-L6, batch 32, "
        "1 worker x 2 CPUs, default precision; LoRA r 8 on query/value + head); peak memory: the worker's peak RSS",
    }
