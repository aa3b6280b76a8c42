"""The GPU suite: `python -m bench --suite gpu`, under 8 minutes on one GPU. Every figure is
measured in this one run; the results land in bench/results/latest.json with the GPU's name.

gpu_train_precision: the default model (MiniLM-L6) trained by the pipeline's own `fit` (Ray
Train, 1 worker, 1 GPU) in bf16 autocast against fp32, on Made-With-ML's rows repeated 16x
(about 10k training rows, dedup off), batch 64, length-grouped batches; samples/s of the second
(warm) epoch. Sides alternate.

gpu_mfu: model FLOPs utilisation of raylane's training step (`loss_of` + `accumulate` +
`optimizer_step`, bf16 autocast, AdamW) on a randomly initialised BERT-base-sized encoder (12
layers, hidden 768, 110M parameters) at three batch shapes, from the step time on device
(CUDA-synchronised) and the standard count of 6 x non-embedding parameters + 12 x layers x
hidden x sequence FLOPs per token (PaLM, appendix B). The GPU's dense bf16 peak comes from
PEAK_BF16_TFLOPS by name, or $BENCH_GPU_PEAK_TFLOPS.

gpu_ddp_scaling: with N > 1 GPUs, `fit` on N workers x 1 GPU against 1 worker, same global
batch (64 x N per step, so each GPU keeps 64 rows), bf16; the ratio is samples/s over N x the
one-GPU rate (1.0 = linear). With one GPU it records that there was nothing to scale.

gpu_fsdp_lora: tokens/s and peak CUDA memory of raylane's training step on a randomly
initialised 1.1B-parameter Llama-style decoder classifier (TinyLlama's shape), sharded by
raylane's FSDP2 code (one rank), LoRA r 16 on q/k/v/o, gradient checkpointing, bf16; batch 8 x
512 tokens. `fsdp_lora_rate` runs on a CPU too, with a small shape, to check the code path.

gpu_serve_throughput: ok requests/s at concurrency 64 of the default model served by one
replica on one GPU against one replica on 2 CPUs (the CPU default), batching on (max_batch_size
32), each warmed up; one text per request from the holdout.
"""

from __future__ import annotations

import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import REPO_ROOT
from bench.harness import benchmark

REPEATS = 16
BATCH = 64
PEAK_BF16_TFLOPS = {  # dense bf16 (fp16 where the GPU has no bf16) tensor-core peaks, vendor sheets
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "T4": 65.0,
    "V100": 125.0,
}


def _peak_tflops(name: str) -> float | None:
    if os.environ.get("BENCH_GPU_PEAK_TFLOPS"):
        return float(os.environ["BENCH_GPU_PEAK_TFLOPS"])
    for key, value in PEAK_BF16_TFLOPS.items():  # most specific first
        if key in name:
            return value
    return None


def _repeated_source(directory: Path) -> Path:
    """Made-With-ML's training file with every row repeated REPEATS times. Copies keep their id,
    so all copies of a row hash to the same split."""
    source = REPO_ROOT / "data" / "made-with-ml" / "dataset.csv"
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    target = directory / "repeated.csv"
    with open(target, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for _ in range(REPEATS):
            writer.writerows(rows)
    return target


def _gpu_dataset(tmp: str):
    from raylane.config import load_config
    from raylane.ingest.stage import run_ingest

    source = _repeated_source(Path(tmp))
    cfg = load_config(None, [f"output_dir={tmp}", f"data.source={source}", "data.dedup=false", "sweep.enabled=false"])
    return run_ingest(cfg).dataset


def _fit_rate(tmp: str, dataset, name: str, overrides: list[str]) -> float:
    from bench.train import ray_train
    from raylane.config import load_config

    cfg = load_config(
        None,
        [
            f"output_dir={tmp}",
            "sweep.enabled=false",
            "train.epochs=2",
            "resources.use_gpu=true",
            "resources.cpus_per_worker=1",
            *overrides,
        ],
    )
    rates, _, _ = ray_train(dataset, cfg, name)
    return rates[-1]


@benchmark(
    "gpu_train_precision",
    "default-model training samples/s on one GPU (the pipeline's fit): bf16 autocast vs fp32",
    suite="gpu",
)
def train_precision(quick: bool) -> dict:
    from raylane.runtime import init_ray

    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = _gpu_dataset(tmp)
        common = ["resources.num_workers=1", f"train.batch_size={BATCH}"]
        bf16, fp32 = [], []
        for i in range(1 if quick else 2):
            bf16.append(_fit_rate(tmp, dataset, f"gpu-bf16-{i}", [*common, "train.precision=bf16"]))
            fp32.append(_fit_rate(tmp, dataset, f"gpu-fp32-{i}", [*common, "train.precision=fp32"]))
    ours, base = statistics.median(bf16), statistics.median(fp32)
    return {
        "ours": round(ours, 1),
        "baseline": round(base, 1),
        "ratio": round(ours / base, 3),
        "unit": f"training samples/s, MiniLM-L6, batch {BATCH}, 1 GPU, 2nd epoch (bf16 vs fp32)",
        "runs_bf16": [round(x, 1) for x in bf16],
        "runs_fp32": [round(x, 1) for x in fp32],
    }


def _bert_base_step_flops(model, batch: int, seq: int) -> float:
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    per_token = 6 * non_embedding + 12 * config.num_hidden_layers * config.hidden_size * seq
    return per_token * batch * seq


@benchmark(
    "gpu_mfu",
    "model FLOPs utilisation of raylane's training step, BERT-base-sized encoder, bf16, best of 3 shapes",
    goal=">= 40%",
    suite="gpu",
)
def mfu(quick: bool) -> dict:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from raylane.tasks import get_task
    from raylane.train.optim import Precision, accumulate, build_optimizer, build_scheduler, loss_of, optimizer_step

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    peak = _peak_tflops(name)
    task = get_task("text_classification")
    precision = Precision(device, "bf16")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=4)).to(device).train()
    optimizer = build_optimizer(model, 1e-4, 0.01)
    scheduler = build_scheduler(optimizer, 0, 10_000, "linear")
    shapes = [(32, 128)] if quick else [(32, 128), (64, 256), (32, 512)]
    results = {}
    for batch, seq in shapes:
        inputs = {
            "input_ids": torch.randint(1000, 30000, (batch, seq), device=device),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
            "labels": torch.randint(0, 4, (batch,), device=device),
        }

        def step(batch_inputs):
            accumulate(model, [batch_inputs], lambda m, b: loss_of(m, b, task, {}, precision), precision)
            optimizer_step(model, optimizer, scheduler, precision, 1.0)

        for _ in range(5):
            step(inputs)
        torch.cuda.synchronize()
        steps = 10 if quick else 30
        started = time.perf_counter()
        for _ in range(steps):
            step(inputs)
        torch.cuda.synchronize()
        per_step = (time.perf_counter() - started) / steps
        tflops = _bert_base_step_flops(model, batch, seq) / per_step / 1e12
        results[f"{batch}x{seq}"] = {
            "step_ms": round(per_step * 1000, 2),
            "achieved_tflops": round(tflops, 1),
            "mfu": round(tflops / peak, 3) if peak else None,
        }
    best = max(results.values(), key=lambda r: r["achieved_tflops"])
    return {
        "ours": best["mfu"],
        "baseline": None,
        "ratio": None,
        "unit": f"MFU (achieved / {peak} TFLOPS dense bf16 peak of {name}); batch x sequence shapes in 'shapes'",
        "achieved_tflops": best["achieved_tflops"],
        "shapes": results,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


@benchmark(
    "gpu_ddp_scaling",
    "training samples/s on N GPUs (DDP, Ray Train) over N x one GPU, same rows per GPU per step",
    goal=">= 0.9 on one node",
    suite="gpu",
)
def ddp_scaling(quick: bool) -> dict:
    import torch

    from raylane.runtime import init_ray

    gpus = torch.cuda.device_count()
    if gpus < 2:
        return {
            "ours": None,
            "baseline": None,
            "ratio": None,
            "unit": "scaling efficiency",
            "note": f"{gpus} GPU on this machine: nothing to scale",
        }
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = _gpu_dataset(tmp)
        one = _fit_rate(tmp, dataset, "gpu-ddp-1", ["resources.num_workers=1", f"train.batch_size={BATCH}"])
        many = _fit_rate(
            tmp, dataset, f"gpu-ddp-{gpus}", [f"resources.num_workers={gpus}", f"train.batch_size={BATCH * gpus}"]
        )
    return {
        "ours": round(many, 1),
        "baseline": round(one * gpus, 1),
        "ratio": round(many / (one * gpus), 3),
        "unit": f"training samples/s on {gpus} GPUs vs {gpus} x 1 GPU (MiniLM-L6, {BATCH} rows per GPU per step, bf16)",
        "one_gpu": round(one, 1),
    }


@benchmark(
    "gpu_serve_throughput",
    "ok requests/s at concurrency 64: one Serve replica on one GPU vs one on 2 CPUs",
    suite="gpu",
)
def serve_throughput(quick: bool) -> dict:
    from bench.serve import fresh_model, holdout, load, serve_session

    texts, labels = holdout()
    seconds = 5 if quick else 15
    with tempfile.TemporaryDirectory() as tmp, serve_session() as server:
        model_dir = fresh_model(Path(tmp) / "model", labels)
        rates = {}
        for side, fields in {"gpu": {"replica_gpus": 1}, "cpu": {}}.items():
            server.deploy(model_dir, max_batch_size=32, max_ongoing_requests=128, **fields)
            load(server.url, texts, 64, seconds=3)
            rates[side] = load(server.url, texts, 64, seconds=seconds, label=side).throughput
        server.delete()
    return {
        "ours": round(rates["gpu"], 1),
        "baseline": round(rates["cpu"], 1),
        "ratio": round(rates["gpu"] / rates["cpu"], 2),
        "unit": "ok requests/s, concurrency 64, 1 text/request, max_batch_size 32 (GPU replica vs 2-CPU replica)",
    }


# A TinyLlama-1.1B-shaped decoder (22 layers, hidden 2048, grouped-query attention), randomly
# initialised: the size the issue asks about, no download.
LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=22,
    num_attention_heads=32,
    num_key_value_heads=4,
    vocab_size=32000,
    max_position_embeddings=2048,
)


def fsdp_lora_rate(device, shape: dict, batch: int, seq: int, steps: int) -> dict:
    """Tokens/s and peak memory of raylane's training step (`loss_of`, `accumulate`,
    `optimizer_step`) on a Llama-style decoder classifier, sharded by `raylane.train.sharding`
    (FSDP2, one rank here) with LoRA (r 16 on q/k/v/o) and gradient checkpointing, bf16."""
    import os

    import torch
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from raylane.config.schema import LoraSettings
    from raylane.tasks import get_task
    from raylane.train import lora, sharding
    from raylane.train.optim import Precision, accumulate, build_optimizer, build_scheduler, loss_of, optimizer_step

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(num_labels=4, pad_token_id=0, **shape))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = lora.apply(
        model, LoraSettings(r=16, alpha=32.0, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    )
    trainable, total = lora.parameter_counts(model)
    precision = Precision(device, "bf16")
    model = sharding.shard(model, device, precision.dtype, cpu_offload=False)
    optimizer = build_optimizer(model, 1e-4, 0.01)
    scheduler = build_scheduler(optimizer, 0, 10_000, "linear")
    task = get_task("text_classification")
    inputs = {
        "input_ids": torch.randint(1, shape["vocab_size"], (batch, seq), device=device),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
        "labels": torch.randint(0, 4, (batch,), device=device),
    }

    def step():
        accumulate(model, [inputs], lambda m, b: loss_of(m, b, task, {}, precision), precision)
        optimizer_step(model, optimizer, scheduler, precision, 1.0)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - started
    from raylane.train.memory import peak_memory_mb

    return {
        "tokens_per_s": round(batch * seq * steps / elapsed, 1),
        "step_ms": round(1000 * elapsed / steps, 1),
        "peak_memory_mb": round(peak_memory_mb(device)),
        "parameters": total,
        "trainable_parameters": trainable,
    }


@benchmark(
    "gpu_fsdp_lora",
    "a 1.1B-parameter Llama-style decoder classifier: FSDP2 + LoRA + gradient checkpointing, bf16, one GPU: "
    "tokens/s and peak memory of raylane's training step",
    suite="gpu",
)
def fsdp_lora(quick: bool) -> dict:
    import torch

    device = torch.device("cuda")
    measured = fsdp_lora_rate(device, LLAMA_1B, batch=8, seq=512, steps=5 if quick else 20)
    return {
        "ours": measured["tokens_per_s"],
        "baseline": None,
        "ratio": None,
        "unit": f"training tokens/s ({torch.cuda.get_device_name(0)}; batch 8 x 512 tokens; LoRA r 16 on q/k/v/o)",
        **measured,
    }
