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


def make_tiny_image_model(target: Path) -> Path:
    """An image classifier's architecture (a 2-stage ResNet) and image processor (resize to 16x16,
    normalise), with no weights: the pipeline builds it with model.init=config."""
    from PIL import Image
    from transformers import ResNetConfig
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
    ).save_pretrained(target)
    ViTImageProcessorPil(
        do_resize=True,
        size={"height": 16, "width": 16},
        resample=Image.Resampling.BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        do_convert_rgb=True,
    ).save_pretrained(target)
    return target


def _tiny_llama_config(vocab_size: int, layers: int = 2, **tokens):
    """2 layers (or `layers`), hidden 64, grouped-query attention (4 heads, 2 key/value heads)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **tokens,
    )


def make_tiny_llama(target: Path) -> Path:
    """A randomly initialised 2-layer Llama (a decoder, as causal LMs are) with the MiniLM
    tokenizer, which has no end-of-sequence token: a Llama tokenizer's shape matters less here
    than the decoder's, which classifies from its last token that is not padding."""
    import torch
    from transformers import LlamaModel

    from raylane.config import DEFAULT_MODEL
    from raylane.models import load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    torch.manual_seed(0)
    LlamaModel(_tiny_llama_config(tokenizer.vocab_size, pad_token_id=None)).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


# A chat template in the shape of real ones (roles, an end-of-turn token, a generation prompt)
# that the MiniLM tokenizer can render: its end-of-sequence token is [SEP].
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }} [SEP] {% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def make_tiny_causal_lm(target: Path, layers: int = 2) -> Path:
    """A randomly initialised 2-layer Llama causal LM with the MiniLM tokenizer given a chat
    template and [SEP] as its end-of-sequence token: a chat model's every moving part (template,
    end of turn, padding) at a tiny fraction of the cost. More `layers`: a slower one, for tests
    of what happens while a generation takes seconds."""
    import torch
    from transformers import LlamaForCausalLM

    from raylane.config import DEFAULT_MODEL
    from raylane.models import load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    tokenizer.eos_token = "[SEP]"
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = _tiny_llama_config(
        tokenizer.vocab_size,
        layers,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.cls_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
