"""Compressed serving variants: int8 dynamic quantization and magnitude pruning, on a real (tiny) BERT."""

import numpy as np
import pytest
import torch

from raylane.compress import compress, describe
from raylane.predictor import Predictor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    from raylane.models import load_classifier, load_tokenizer

    target = tmp_path_factory.mktemp("exported")
    torch.manual_seed(0)
    load_classifier(str(tiny_model), ["alpha", "beta", "gamma"]).save_pretrained(target)
    load_tokenizer(str(tiny_model)).save_pretrained(target)
    return str(target)


TEXTS = [f"text number {i} about {topic}" for i, topic in enumerate(["vision", "language", "ops", "graphs"] * 8)]


def _linear_weights(model) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]


def test_int8_replaces_every_linear_layer_and_keeps_the_scores_close(model_dir):
    fp32, int8 = Predictor(model_dir), Predictor(model_dir, quantize="int8")
    assert _linear_weights(fp32.model) and not _linear_weights(int8.model)
    quantized = [m for m in int8.model.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
    assert len(quantized) == len(_linear_weights(fp32.model))
    a, b = fp32.probabilities(TEXTS), int8.probabilities(TEXTS)
    assert np.abs(a - b).max() < 0.05
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9
    assert int8.device.type == "cpu"


@pytest.mark.parametrize("amount", [0.3, 0.6])
def test_pruning_zeroes_the_smallest_weights_of_each_linear_layer(model_dir, amount):
    pruned = Predictor(model_dir, prune_amount=amount)
    original = Predictor(model_dir)
    for before, after in zip(_linear_weights(original.model), _linear_weights(pruned.model)):
        zeros = (after == 0).float().mean().item()
        assert zeros == pytest.approx(amount, abs=0.02)
        kept = after != 0
        # What stays is untouched, and every dropped weight was no larger than every kept one.
        assert torch.equal(after[kept], before[kept])
        assert before[~kept].abs().max() <= before[kept].abs().min()
    assert not any(name.endswith("_orig") for name, _ in pruned.model.named_parameters())  # no mask left


def test_bad_settings_are_refused():
    layer = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="quantize"):
        compress(layer, quantize="int4")
    with pytest.raises(ValueError, match="prune_amount"):
        compress(layer, prune_amount=1.0)


def test_variant_names():
    assert [describe("none", 0), describe("int8", 0), describe("int8", 0.3)] == ["fp32", "int8", "int8+pruned30"]
