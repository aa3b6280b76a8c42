"""Drift between what a model was trained on and what it is asked now: the population
stability index (PSI) of the predicted-label mix and of input lengths (tokens) over a sliding
window, against the training split's stats from the ingest manifest.

PSI = sum over bins of (p_now - p_train) * ln(p_now / p_train). The usual reading: under 0.1
no real shift, 0.1-0.25 moderate, over 0.25 large.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylane.manifest import Manifest

# Token-length bins: fine where short texts live, coarse beyond; the last bin is open-ended.
LENGTH_EDGES = (0, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
EPSILON = 1e-4  # stands in for an empty bin, so one unseen bin gives a large but finite PSI


def length_bin(length: int) -> int:
    for i in range(len(LENGTH_EDGES) - 1, -1, -1):
        if length >= LENGTH_EDGES[i]:
            return i
    return 0


def length_histogram(counts_by_length) -> list[int]:
    """Counts per LENGTH_EDGES bin from counts per exact length (index = token count)."""
    bins = [0] * len(LENGTH_EDGES)
    for length, count in enumerate(counts_by_length):
        bins[length_bin(length)] += int(count)
    return bins


def psi(expected: list[float], actual: list[float]) -> float:
    """PSI of two histograms over the same bins (counts or proportions; each is normalised)."""
    if len(expected) != len(actual):
        raise ValueError(f"histograms differ in bins: {len(expected)} vs {len(actual)}")
    e_total, a_total = sum(expected), sum(actual)
    if not e_total or not a_total:
        return 0.0
    value = 0.0
    for e, a in zip(expected, actual):
        p_e, p_a = max(e / e_total, EPSILON), max(a / a_total, EPSILON)
        value += (p_a - p_e) * math.log(p_a / p_e)
    return value


def reference_from_manifest(manifest: Manifest, split: str = "train") -> dict[str, Any]:
    """What a served model is compared with: the training split's label mix and token-length
    histogram. Stored beside the model, so a replica needs neither the dataset nor its manifest."""
    return {
        "labels": manifest.labels,
        "label_counts": [manifest.class_counts[split].get(label, 0) for label in manifest.labels],
        "length_edges": list(LENGTH_EDGES),
        "length_counts": manifest.token_lengths[split].histogram,
    }


REFERENCE_FILE = "drift_reference.json"


def write_reference(model_dir: str, reference: dict[str, Any]) -> None:
    (Path(model_dir) / REFERENCE_FILE).write_text(json.dumps(reference, indent=1))


def read_reference(model_dir: str) -> dict[str, Any] | None:
    """The reference stored with a model; None for a model registered without one."""
    path = Path(model_dir) / REFERENCE_FILE
    return json.loads(path.read_text()) if path.exists() else None


class DriftWindow:
    """The last `size` predictions (label index, token length) and their PSI against a reference."""

    def __init__(self, reference: dict[str, Any], labels: list[str], size: int = 1000):
        # Label order follows the model; the reference may list them in another order.
        by_name = dict(zip(reference["labels"], reference["label_counts"]))
        self.label_reference = [by_name.get(label, 0) for label in labels]
        self.length_reference = reference.get("length_counts")
        if reference.get("length_edges") not in (None, list(LENGTH_EDGES)):
            self.length_reference = None  # binned differently: not comparable
        self.window: deque[tuple[int, int]] = deque(maxlen=size)

    def add(self, label_ids, lengths) -> None:
        self.window.extend(zip((int(i) for i in label_ids), (int(n) for n in lengths)))

    def label_psi(self) -> float:
        counts = Counter(label for label, _ in self.window)
        return psi(self.label_reference, [counts.get(i, 0) for i in range(len(self.label_reference))])

    def length_psi(self) -> float | None:
        if not self.length_reference:
            return None
        counts = Counter(length_bin(n) for _, n in self.window)
        return psi(self.length_reference, [counts.get(i, 0) for i in range(len(LENGTH_EDGES))])
