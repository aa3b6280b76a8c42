"""Drift between what a model was trained on and what it is asked now: the population stability
index (PSI) of features of the recent predictions, over a sliding window, against the training
split's histograms from the ingest manifest.

Features, by task: `label` (the predicted label mix; every predicted label for multi-label),
`input_tokens` (text: tokens per text), `brightness` (images: mean grey level), `value` (a
numeric target: the predicted values, binned over the training target's range).

PSI = sum over bins of (p_now - p_train) * ln(p_now / p_train). The usual reading: under 0.1
no real shift, 0.1-0.25 moderate, over 0.25 large.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylane.manifest import Manifest

# Token-length bins: fine where short texts live, coarse beyond; the last bin is open-ended.
LENGTH_EDGES = (0, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
BRIGHTNESS_EDGES = tuple(range(0, 256, 16))
VALUE_BINS = 10
EPSILON = 1e-4  # stands in for an empty bin, so one unseen bin gives a large but finite PSI


def bin_of(value: float, edges) -> int:
    """The bin of `value`: bin i holds edges[i] <= value < edges[i+1]; the last is open-ended."""
    return max(0, bisect.bisect_right(list(edges), value) - 1)


def length_bin(length: int) -> int:
    return bin_of(length, LENGTH_EDGES)


def histogram(values, edges) -> list[int]:
    counts = [0] * len(edges)
    for value in values:
        counts[bin_of(value, edges)] += 1
    return counts


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
    """What a served model is compared with: the training split's histograms. Stored beside the
    model, so a replica needs neither the dataset nor its manifest."""
    features: dict[str, dict[str, Any]] = {}
    if manifest.labels:
        features["label"] = {
            "bins": list(manifest.labels),
            "counts": [manifest.class_counts[split].get(name, 0) for name in manifest.labels],
        }
    if split in manifest.token_lengths:
        features["input_tokens"] = {"edges": list(LENGTH_EDGES), "counts": manifest.token_lengths[split].histogram}
    if split in manifest.image_stats:
        features["brightness"] = {
            "edges": list(BRIGHTNESS_EDGES),
            "counts": manifest.image_stats[split].brightness_histogram,
        }
    stats = manifest.target_stats.get(split)
    if stats and stats.get("histogram"):
        features["value"] = {"edges": list(stats["edges"]), "counts": list(stats["histogram"])}
    return {"features": features}


REFERENCE_FILE = "drift_reference.json"


def write_reference(model_dir: str, reference: dict[str, Any]) -> None:
    (Path(model_dir) / REFERENCE_FILE).write_text(json.dumps(reference, indent=1))


def read_reference(model_dir: str) -> dict[str, Any] | None:
    """The reference stored with a model; None for a model registered without one. A reference
    written before features were named (label mix and token lengths only) reads as the same."""
    path = Path(model_dir) / REFERENCE_FILE
    if not path.exists():
        return None
    reference = json.loads(path.read_text())
    if "features" in reference:
        return reference
    features = {"label": {"bins": reference["labels"], "counts": reference["label_counts"]}}
    if reference.get("length_counts") and reference.get("length_edges") in (None, list(LENGTH_EDGES)):
        features["input_tokens"] = {"edges": list(LENGTH_EDGES), "counts": reference["length_counts"]}
    return {"features": features}


class DriftWindow:
    """The last `size` predictions' features and their PSI against a reference, per feature.
    Labels are compared by name, so a model whose label order differs from the manifest's still
    compares like with like.

    Counts per bin are kept as predictions enter and leave the window, so a batch costs its own
    size and `scores()` the bins, not the window: both run on every batch a replica scores."""

    def __init__(self, reference: dict[str, Any], labels: list[str], size: int = 1000):
        self.features = reference["features"]
        self.labels = labels
        self.window: deque[dict[str, Any]] = deque(maxlen=size)
        self._counts: dict[str, Counter] = {name: Counter() for name in self.features}
        self._holding: Counter = Counter()  # predictions in the window that carry each feature
        self._edges = {name: list(f["edges"]) for name, f in self.features.items() if "edges" in f}

    def add(self, observations: list[dict[str, Any]]) -> None:
        """One dict per prediction: {"label": label name or list of names, "input_tokens": n, ...}."""
        for observation in observations:
            if len(self.window) == self.window.maxlen:
                self._count(self.window[0], -1)  # about to fall out of the window
            self.window.append(observation)
            self._count(observation, 1)

    def _count(self, observation: dict[str, Any], sign: int) -> None:
        for name, feature in self.features.items():
            if name not in observation:
                continue
            self._holding[name] += sign
            value = observation[name]
            if value is None:
                continue
            if "bins" in feature:
                for key in value if isinstance(value, list) else [value]:
                    self._counts[name][key] += sign
            else:
                self._counts[name][bin_of(value, self._edges[name])] += sign

    def _histogram(self, name: str, feature: dict[str, Any]) -> list[int]:
        keys = feature["bins"] if "bins" in feature else range(len(feature["edges"]))
        return [self._counts[name].get(key, 0) for key in keys]

    def scores(self) -> dict[str, float]:
        """PSI per feature the reference has and the window holds."""
        return {
            name: psi(feature["counts"], self._histogram(name, feature))
            for name, feature in self.features.items()
            if self._holding[name] > 0
        }
