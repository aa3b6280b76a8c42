"""Checks across the train, model and resources sections: settings that are each valid alone but
make no sense together fail at load, naming the key, before Ray starts."""

from __future__ import annotations

from raylane.errors import ConfigError


def check_training_settings(cfg) -> None:
    tc = cfg.train
    workers = cfg.resources.num_workers
    if tc.strategy == "fsdp" and workers < 2:
        raise ConfigError(
            "train.strategy",
            f"fsdp shards the model over the workers, so it needs resources.num_workers >= 2 (got {workers}); "
            "one worker holds the whole model anyway: use ddp",
        )
    if tc.cpu_offload and tc.strategy != "fsdp":
        raise ConfigError("train.cpu_offload", "offloads FSDP's shards, so it needs train.strategy: fsdp")
    if tc.cpu_offload and not cfg.resources.use_gpu:
        raise ConfigError("train.cpu_offload", "moves shards from GPU memory to the CPU's: it needs resources.use_gpu")
    if tc.strategy == "fsdp" and tc.precision == "fp16":
        raise ConfigError(
            "train.precision", "fp16 needs a sharded loss scaler, which fsdp here does not have: use bf16 or fp32"
        )
    if tc.peft_export == "adapter" and tc.peft == "none":
        raise ConfigError("train.peft_export", "adapter export is for train.peft: lora")
    if tc.peft == "lora" and cfg.model.init == "config":
        raise ConfigError(
            "train.peft",
            "LoRA adapts pretrained weights and keeps them frozen, but model.init: config makes them random",
        )
