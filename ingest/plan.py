"""The verdicts that need every row at once: duplicates, conflicting labels, the label set and
(stratified) split thresholds.

The driver streams a few fixed-width columns of the prepared rows (about 30 bytes per accepted
row, never the texts) and decides here, with numpy; `transforms.finalize_batch` then applies the
resulting `Plan` to each block in parallel. Counts per reason, split and class come out of the
same arrays, so the manifest is exact by construction (and checked against the written files).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raylane.ingest.reader import POSITION_BITS
from raylane.ingest.transforms import ACCEPTED, CONFLICTING_LABEL, DUPLICATE, UNKNOWN_LABEL, Plan
from raylane.sources import IngestError
from raylane.tasks import get_task

INDEX_COLUMNS = ["pos", "lines", "role", "reason", "label", "text_hash", "key_frac", "n_chars"]


@dataclass
class RowIndex:
    """Accepted rows' keys (numpy, compact) plus counts of everything else."""

    pii_kinds: tuple[str, ...] = ()
    rows: int = 0
    accepted_chars: int = 0
    reasons: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    rows_by_file: Counter = field(default_factory=Counter)  # file ordinal -> staged rows
    lines_by_file: Counter = field(default_factory=Counter)  # file ordinal -> lines those rows cover
    _parts: list[dict[str, np.ndarray]] = field(default_factory=list)
    _labels: dict[str, int] = field(default_factory=dict)

    def add(self, batch: Any) -> None:
        """One pyarrow RecordBatch/Table of INDEX_COLUMNS (+ pii_<kind>)."""
        import pyarrow.compute as pc

        self.rows += batch.num_rows
        self.reasons.update(batch.column("reason").to_pylist())
        ordinals = batch.column("pos").to_numpy() >> POSITION_BITS
        for ordinal, rows, lines in zip(*_sums_by(ordinals, batch.column("lines").to_numpy())):
            self.rows_by_file[ordinal] += rows
            self.lines_by_file[ordinal] += lines
        for kind in self.pii_kinds:
            self.pii[kind] += int(pc.sum(batch.column(f"pii_{kind}")).as_py() or 0)
        ok = pc.equal(batch.column("reason"), ACCEPTED)
        kept = batch.filter(ok)
        roles = kept.column("role").to_pylist()
        self.accepted_chars += int(pc.sum(kept.column("n_chars")).as_py() or 0)
        codes = [self._labels.setdefault(label, len(self._labels)) for label in kept.column("label").to_pylist()]
        self._parts.append(
            {
                "pos": kept.column("pos").to_numpy(),
                "hash": kept.column("text_hash").to_numpy(),
                "frac": kept.column("key_frac").to_numpy(),
                "test": np.asarray([r == "test" for r in roles], bool),
                "feedback": np.asarray([r == "feedback" for r in roles], bool),
                "label": np.asarray(codes, np.int32),
            }
        )

    def arrays(self) -> dict[str, np.ndarray]:
        dtypes = {
            "pos": np.int64,
            "hash": np.int64,
            "frac": np.float64,
            "test": bool,
            "feedback": bool,
            "label": np.int32,
        }
        return {k: np.concatenate([np.zeros(0, t)] + [p[k] for p in self._parts]).astype(t) for k, t in dtypes.items()}

    @property
    def label_names(self) -> list[str]:
        return sorted(self._labels, key=self._labels.get)


def _sums_by(keys: np.ndarray, values: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """(distinct keys, rows per key, sum of `values` per key), as Python ints."""
    distinct, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=values, minlength=len(distinct)).astype(np.int64)
    return distinct.tolist(), counts.tolist(), sums.tolist()


def find_duplicates(pos: np.ndarray, text_hash: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dropped positions, True where the drop is a label conflict). Among rows with the same text
    the one with the lowest position is kept, unless the copies disagree on the label: then none
    is, since no one can say which label is right."""
    if not len(pos):
        return np.zeros(0, np.int64), np.zeros(0, bool)
    order = np.lexsort((pos, text_hash))
    h, lab = text_hash[order], label[order]
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    sizes = np.diff(np.r_[starts, len(h)])
    conflict_group = np.minimum.reduceat(lab, starts) != np.maximum.reduceat(lab, starts)
    conflict = np.repeat(conflict_group, sizes)
    first = np.zeros(len(h), bool)
    first[starts] = True
    drop = conflict | ~first
    return pos[order][drop], conflict[drop]


def _cuts(frac: np.ndarray, shares: tuple[float, float]) -> tuple[float, float]:
    """Thresholds so that the lowest `shares[0]` of the fractions go to test and the next
    `shares[1]` to validation: exact proportions within one row."""
    ordered = np.sort(frac)
    n = len(ordered)

    def at(share: float) -> float:
        k = int(round(n * share))
        return float(ordered[k]) if k < n else 1.0

    return at(shares[0]), at(shares[0] + shares[1])


@dataclass(frozen=True)
class Verdicts:
    plan: Plan
    counts: dict[str, Any]


def build_plan(
    index: RowIndex,
    *,
    labels: tuple[str, ...],
    dedup: bool,
    stratify: bool,
    val_fraction: float,
    test_fraction: float,
    source: str,
    task: str = "text_classification",
) -> Verdicts:
    """Decide every whole-dataset verdict; `test_fraction` is 0 when an explicit test source exists.
    What a label is (one name, several, a number) is the task's target's to say."""
    target = get_task(task).target
    if not index.rows:
        raise IngestError(f"{source}: no rows to ingest (every file is empty or has only a header)")
    a = index.arrays()
    names = index.label_names
    if dedup:
        drop_pos, drop_conflict = find_duplicates(a["pos"], a["hash"], a["label"])
    else:
        drop_pos, drop_conflict = np.zeros(0, np.int64), np.zeros(0, bool)
    order = np.argsort(drop_pos)
    drop_pos, drop_conflict = drop_pos[order], drop_conflict[order]
    kept = ~np.isin(a["pos"], drop_pos)
    data_rows = kept & ~a["test"]

    seen = {name for c in np.unique(a["label"][data_rows]) for name in target.names(names[c])}
    try:
        label_set = target.label_set(seen, labels)
    except ValueError as err:
        raise IngestError(f"{source}: {err}") from None
    known = np.asarray([target.known(n, frozenset(label_set)) for n in names] or [False])
    label_ok = known[a["label"]] if len(a["label"]) else np.zeros(0, bool)

    test_cut: dict[str, float] = {}
    val_cut: dict[str, float] = {}
    if stratify:
        for code, name in enumerate(names):
            rows = data_rows & label_ok & (a["label"] == code)
            if name in label_set and rows.any():
                test_cut[name], val_cut[name] = _cuts(a["frac"][rows], (test_fraction, val_fraction))
    else:
        test_cut["*"], val_cut["*"] = test_fraction, test_fraction + val_fraction
    plan = Plan(
        labels=label_set,
        task=task,
        drop_pos=drop_pos,
        drop_reason=tuple(CONFLICTING_LABEL if c else DUPLICATE for c in drop_conflict.tolist()),
        test_cut=test_cut,
        val_cut=val_cut,
    )

    reasons = Counter({r: n for r, n in index.reasons.items() if r != ACCEPTED})
    reasons[CONFLICTING_LABEL] += int(drop_conflict.sum())
    reasons[DUPLICATE] += int((~drop_conflict).sum())
    accepted = kept & label_ok
    reasons[UNKNOWN_LABEL] += int((kept & ~label_ok).sum())
    class_counts: dict[str, Counter] = {s: Counter() for s in ("train", "val", "test")}
    rows_per_split: Counter = Counter()
    values: dict[str, list[float]] = {s: [] for s in ("train", "val", "test")}
    for code, frac, test, feedback in zip(
        a["label"][accepted].tolist(),
        a["frac"][accepted].tolist(),
        a["test"][accepted].tolist(),
        a["feedback"][accepted].tolist(),
    ):
        label = names[code]
        split = plan.split(label, frac, "test" if test else "feedback" if feedback else "data")
        rows_per_split[split] += 1
        class_counts[split].update(target.names(label))
        value = target.value_of(label)
        if value is not None:
            values[split].append(value)
    accepted_files, accepted_rows, _ = _sums_by(a["pos"][accepted] >> POSITION_BITS, np.zeros(int(accepted.sum())))
    counts = {
        "input": index.rows,
        "accepted": int(accepted.sum()),
        "accepted_by_file": dict(zip(accepted_files, accepted_rows)),
        "quarantined": sum(reasons.values()),
        "quarantine_reasons": {r: n for r, n in sorted(reasons.items()) if n},
        "splits": {s: rows_per_split[s] for s in ("train", "val", "test")},
        "class_counts": {s: dict(sorted(c.items())) for s, c in class_counts.items()},
        "target_stats": {s: _stats(v) for s, v in values.items()} if any(values.values()) else {},
        "pii": {k: index.pii.get(k, 0) for k in index.pii_kinds},
    }
    return Verdicts(plan, counts)


def _stats(values: list[float]) -> dict[str, Any]:
    """A numeric target's summary in one split: what standardises it, and the histogram drift
    compares the predicted values with (`raylane.drift.VALUE_BINS` bins over its range)."""
    from raylane.drift import VALUE_BINS, histogram

    if not values:
        return {"rows": 0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0, "edges": [], "histogram": []}
    v = np.asarray(values, dtype=np.float64)
    edges = np.linspace(v.min(), v.max(), VALUE_BINS, endpoint=False).tolist()
    return {
        "rows": len(v),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "edges": edges,
        "histogram": histogram(v.tolist(), edges),
    }
