"""Hashes fixed by content alone (not by Python's per-process seed): what dedup, the split and
the choice of rows to generate for rely on, in every process and on every run."""

from __future__ import annotations

import hashlib

_SPAN = float(2**64)


def stable_hash(key: str | bytes) -> int:
    """A signed 64-bit hash fixed by `key` alone."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def fraction_of(hashed: int) -> float:
    """A `stable_hash` as a number in [0, 1)."""
    return (hashed + 2**63) / _SPAN


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key`: the same row lands in the same split whatever the shard
    order, the worker or the size of the rest of the data."""
    return fraction_of(stable_hash(key))
