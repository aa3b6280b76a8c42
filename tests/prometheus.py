"""Reading the Prometheus text Ray exports on a node's metrics port, for assertions."""

from __future__ import annotations

import time

import requests
from prometheus_client.parser import text_string_to_metric_families


def metrics_port() -> int:
    import ray

    return int(ray.nodes()[0]["MetricsExportPort"])


def scrape(port: int, prefix: str = "ray_raylane_", **match: str) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of every sample whose name starts with `prefix` and whose
    labels include `match`."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix) and all(s.labels.get(k) == v for k, v in match.items())
    ]


def total(samples, name: str, **match: str) -> float:
    return sum(v for n, labels, v in samples if n == name and all(labels.get(k) == w for k, w in match.items()))


def wait_for(port: int, ready, timeout_s: float = 60, **match: str):
    """Scrape until `ready(samples)` holds: replicas push their metrics every few seconds."""
    deadline = time.time() + timeout_s
    while True:
        samples = scrape(port, **match)
        if ready(samples) or time.time() > deadline:
            return samples
        time.sleep(1)


def shipped_metric_names() -> set[str]:
    """Every metric name the shipped alert rules and Grafana dashboard (monitoring/) read."""
    import json
    import re

    import yaml

    from tests.paths import REPO_ROOT

    monitoring = REPO_ROOT / "monitoring"
    rules = yaml.safe_load((monitoring / "alerts.yml").read_text())["groups"]
    panels = json.loads((monitoring / "grafana" / "raylane-serving.json").read_text())["panels"]
    queries = [rule["expr"] for group in rules for rule in group["rules"]]
    queries += [target["expr"] for panel in panels for target in panel["targets"]]
    return {name for query in queries for name in re.findall(r"\b(ray_[a-z_]+)\b", query)}
