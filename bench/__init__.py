"""Benchmarks: `python -m bench [name ...] [--quick] [--list]`. Results merge into
bench/results/latest.json and BENCHMARKS.md. Separate from the tests on purpose."""
