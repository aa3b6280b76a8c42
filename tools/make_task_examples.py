"""Writes the embedded examples of the text_multilabel and text_regression tasks, derived from
the Made-With-ML sample (data/made-with-ml, MIT):

- multilabel.jsonl / multilabel-holdout.jsonl: each project's tag plus the topics its title and
  description mention (keyword rules below), as a JSON list: `{"title", "description", "tags"}`;
- regression.csv / regression-holdout.csv: `title`, `description` and `words`, the number of
  words in the description: a toy target, read from the text itself, that a model can learn
  and a person can check.

    .venv/bin/python tools/make_task_examples.py
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "made-with-ml"
TOPICS = {
    "vision": r"\b(image|images|video|vision|detection|segmentation|face|pixel|gan)\b",
    "language": r"\b(text|language|nlp|bert|gpt|translation|sentiment|transformer|transformers|token)\b",
    "deployment": r"\b(deploy|deployment|serving|production|monitoring|mlops|docker|kubernetes|api)\b",
    "reinforcement": r"\b(reinforcement|agent|agents|reward|game|games)\b",
    "graph": r"\b(graph|graphs|gnn|node|nodes)\b",
    "time-series": r"\b(time series|time-series|forecast|forecasting|temporal)\b",
}


def rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def topics(row: dict[str, str]) -> list[str]:
    text = f"{row['title']} {row['description']}".lower()
    return sorted({row["tag"], *(name for name, pattern in TOPICS.items() if re.search(pattern, text))})


def write(source: str, stem: str) -> None:
    projects = rows(source)
    with open(DATA / f"multilabel{stem}.jsonl", "w", encoding="utf-8") as f:
        for row in projects:
            f.write(json.dumps({"title": row["title"], "description": row["description"], "tags": topics(row)}) + "\n")
    with open(DATA / f"regression{stem}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "description", "words"])
        for row in projects:
            writer.writerow([row["title"], row["description"], len(row["description"].split())])


if __name__ == "__main__":
    write("dataset.csv", "")
    write("holdout.csv", "-holdout")
    print("wrote multilabel(-holdout).jsonl and regression(-holdout).csv in", DATA)
