"""A randomly initialised tiny BERT with the real MiniLM tokenizer: the same code path as the
default model at about 1/100 of the cost. Saved as a base encoder (no head), like a hub model."""

from __future__ import annotations

from pathlib import Path


def make_tiny_model(target: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    from raylane.config import DEFAULT_MODEL
    from raylane.models import load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)  # the same weights every session, so what a test sees is reproducible
    BertModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
