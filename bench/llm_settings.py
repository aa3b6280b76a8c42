"""`python -m bench.llm_settings [--tracking-uri URI]`: the settings tried for the embedded chat
example (`configs/llm-sft.yaml`), as exact match on the 191-row holdout against minutes, drawn
from `bench/results/llm_sft_settings.json` (one entry per run, each with the command that ran it)
into `bench/results/llm_sft_settings.png`, and logged to MLflow as the run `llm-sft settings`
(figure and table), where the example's own runs are.

The runs themselves take 10-16 minutes each on 2 CPUs, so they are recorded as they are made
rather than rerun by this script.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SETTINGS = RESULTS / "llm_sft_settings.json"


def draw(entries: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for entry in entries:
        chosen = entry.get("chosen", False)
        ax.scatter(entry["train_min"], entry["exact_match"], s=60 if chosen else 36, color="C1" if chosen else "C0")
        point = (entry["train_min"], entry["exact_match"])
        offset = entry.get("label_offset", (6, 4))  # points: to keep two close labels apart
        ax.annotate(entry["label"], point, textcoords="offset points", xytext=tuple(offset))
    ax.axhline(0.90, color="grey", linestyle="--", linewidth=1)
    ax.text(ax.get_xlim()[0], 0.903, " goal: exact match 0.90", color="grey", fontsize=8)
    ax.set_xlabel("training stage, minutes (2 CPUs)")
    ax.set_ylabel("exact match, 191-row holdout")
    ax.set_title("configs/llm-sft.yaml: settings tried")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_settings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: no logging)")
    args = parser.parse_args(argv)
    entries = json.loads(SETTINGS.read_text())
    figure = draw(entries, RESULTS / "llm_sft_settings.png")
    print(f"{figure}")
    if args.tracking_uri:
        import mlflow
        import pandas as pd

        mlflow.set_tracking_uri(args.tracking_uri)
        mlflow.set_experiment("raylane")
        with mlflow.start_run(run_name="llm-sft settings"):
            mlflow.log_artifact(str(figure))
            mlflow.log_table(pd.DataFrame(entries), "llm_sft_settings.json")
        print(f"logged to {args.tracking_uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
