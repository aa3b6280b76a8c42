"""Benchmarks: `python -m bench [name ...] [--quick] [--list]`. Results merge into
bench/results/latest.json and BENCHMARKS.md. Separate from the tests on purpose."""

from pathlib import Path

# Benchmarks run from a checkout: they read its configs and the data beside it (../shared).
REPO_ROOT = Path(__file__).resolve().parents[1]
