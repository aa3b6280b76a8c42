"""`python -m bench [names] [--suite cpu|gpu] [--list] [--quick]`: runs the benchmarks, records each
result (bench/results/latest.json) and refreshes BENCHMARKS.md."""

import argparse
import json
import sys

from bench import suites  # noqa: F401  (registers the benchmarks)
from bench.harness import REGISTRY, record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run raylane's benchmarks.")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: every one of the suite)")
    parser.add_argument(
        "--suite", choices=("cpu", "gpu"), default="cpu", help="cpu (default) or gpu: the benchmarks that need a GPU"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for checking the harness")
    args = parser.parse_args(argv)
    if args.list:
        for b in REGISTRY.values():
            print(f"{b.name:<22} [{b.suite}] {b.description}" + (f"  (goal: {b.goal})" if b.goal else ""))
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    names = args.names or [n for n, b in REGISTRY.items() if b.suite == args.suite]
    if any(REGISTRY[n].suite == "gpu" for n in names):
        import torch

        if not torch.cuda.is_available():
            print("the gpu suite needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
            return 2
    for name in names:
        print(f"== {name}", flush=True)
        entry = record(name, args.quick, REGISTRY[name].fn(args.quick))
        print(
            json.dumps(
                {k: entry[k] for k in ("ours", "baseline", "ratio", "unit")}
                | {k: v for k, v in entry.items() if k.startswith("holdout_")}
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
