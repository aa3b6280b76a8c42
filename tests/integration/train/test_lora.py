"""LoRA through the pipeline's own `fit`: only adapters and the head train, the checkpoint and an
adapter export hold them alone, and a merged export scores exactly as the adapter does."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from raylane.predictor import Predictor
from raylane.tracking import start_run
from raylane.train.driver import _finish_adapter_export, fit

TEXTS = ["a transformer for machine translation", "object detection in drone images", "mlops pipeline on ray"]


def test_lora_trains_adapters_and_both_exports_score_the_same(smoke_dataset, smoke_cfg_factory, tiny_model, tmp_path):
    # The loop in local mode (no Ray Train start-up): what is tested is LoRA and its exports. A
    # real worker trains LoRA in tests/integration/train/test_fault.py and tests/e2e/test_chat_run.py.
    cfg = smoke_cfg_factory("resources.num_workers=0", "train.epochs=1", "train.peft=lora", "train.peft_export=adapter")
    with start_run(cfg, "train-lora") as run:
        result = fit(cfg, smoke_dataset, run, name="lora")
    adapter = Path(result.model_dir)
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model)
    trained = load_file(str(adapter / "adapter_model.safetensors"))
    assert trained and all("lora_" in k or "classifier" in k for k in trained)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in trained.items())  # B starts at 0: it trained

    params = MlflowClient(run.tracking_uri).get_run(run.run_id).data.params
    trainable, total = int(params["trainable_params"]), int(params["total_params"])
    assert trainable == sum(v.numel() for v in trained.values())  # the adapter holds exactly what trained
    assert 0 < trainable < total / 20

    merged = tmp_path / "merged"
    shutil.copytree(adapter, merged)
    _finish_adapter_export(
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, peft_export="merged")), smoke_dataset, merged
    )
    assert not (merged / "adapter_config.json").exists() and (merged / "model.safetensors").is_file()
    from_adapter, _ = Predictor(str(adapter)).scores(TEXTS, raw=True)
    from_merged, _ = Predictor(str(merged)).scores(TEXTS, raw=True)
    np.testing.assert_allclose(from_merged, from_adapter, atol=1e-5)

    # The merge changed the adapted layers and left every other base weight as it was.
    base = load_file(str(Path(tiny_model) / "model.safetensors"))
    weights = load_file(str(merged / "model.safetensors"))
    for name, before in base.items():
        after = weights[f"bert.{name}"] if f"bert.{name}" in weights else weights[name]
        adapted = name.endswith(("query.weight", "value.weight"))
        assert torch.equal(after, before) != adapted, name


def test_a_decoder_trains_sharded_with_lora_and_exports_a_plain_model(smoke_dataset, smoke_cfg_factory, tiny_llama):
    """A Llama-style decoder (as large models are): FSDP2 over 2 gloo workers, LoRA on PEFT's
    default layers for Llama (q_proj, v_proj), the merged export a plain classifier."""
    cfg = smoke_cfg_factory(
        f"model.name_or_path={tiny_llama}",
        "resources.num_workers=2",
        "resources.cpus_per_worker=1",
        "train.strategy=fsdp",
        "train.peft=lora",
        "train.epochs=1",
    )
    with start_run(cfg, "train-fsdp-lora") as run:
        result = fit(cfg, smoke_dataset, run, name="fsdp-lora")
    shards = Path(result.checkpoint_uri) / "shards"
    assert (shards / ".metadata").is_file() and len(list(shards.glob("*.distcp"))) == 2  # one per rank
    exported = Path(result.model_dir)
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["pad_token_id"] is not None
    assert not (exported / "adapter_config.json").exists()
    assert all(p["label"] in smoke_dataset.label_names for p in Predictor(str(exported)).predict(TEXTS))

    base = load_file(str(Path(tiny_llama) / "model.safetensors"))
    weights = load_file(str(exported / "model.safetensors"))
    for name, before in base.items():
        adapted = name.endswith(("q_proj.weight", "v_proj.weight"))
        assert torch.equal(weights[f"model.{name}"], before) != adapted, name
    params = MlflowClient(run.tracking_uri).get_run(run.run_id).data.params
    assert 0 < int(params["trainable_params"]) < int(params["total_params"]) / 20
