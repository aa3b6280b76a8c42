"""Length-grouped batches: every row once, as many batches as random batching, less padding."""

import math

import numpy as np

from raylane.train.batching import length_grouped


def _padded_tokens(batches, lengths) -> int:
    return sum(len(b) * int(lengths[b].max()) for b in batches)


def test_every_row_once_in_as_many_batches_as_random_batching():
    lengths = np.random.default_rng(0).integers(5, 128, size=1000)
    batches = length_grouped(lengths, 32, np.random.default_rng(1))
    assert len(batches) == math.ceil(1000 / 32)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert sum(len(b) < 32 for b in batches) == 1  # only one batch is short


def test_batches_hold_similar_lengths_and_far_less_padding():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.0, 0.6, size=2048).astype(int), 3, 128)  # p50 ~20, long tail
    grouped = length_grouped(lengths, 32, np.random.default_rng(1))
    shuffled = np.array_split(rng.permutation(len(lengths)), 64)
    real = int(lengths.sum())
    assert _padded_tokens(grouped, lengths) < 1.15 * real  # almost no padding
    assert _padded_tokens(shuffled, lengths) > 2 * real  # random batches: mostly padding
    assert all(lengths[b].max() - lengths[b].min() <= 12 for b in grouped[:-1] if len(b) == 32)


def test_batch_order_is_random_and_follows_the_seed():
    lengths = np.arange(640) % 97
    first = [b.tolist() for b in length_grouped(lengths, 32, np.random.default_rng(1))]
    again = [b.tolist() for b in length_grouped(lengths, 32, np.random.default_rng(1))]
    other = [b.tolist() for b in length_grouped(lengths, 32, np.random.default_rng(2))]
    assert first == again
    assert first != other
    means = [float(np.mean(lengths[b])) for b in length_grouped(lengths, 32, np.random.default_rng(1))]
    assert means != sorted(means)  # not shortest first
