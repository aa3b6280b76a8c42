"""Photograph the serving dashboard's panels (monitoring/grafana/raylane-serving.json) as
Prometheus' own UI draws them, in headless Chromium, where Grafana cannot be installed.

    .venv/bin/python tools/dashboard_screenshots.py --prometheus http://127.0.0.1:9090 \
        --out docs/monitoring [--application raylane] [--range 15m]

Each panel's queries (with `$application` set) open in Prometheus' graph page, one PNG per panel,
and `dashboard.png` puts them together in the dashboard's order under their titles. The
Prometheus must scrape Ray's metrics port while an app serves under load, e.g.:

    ray start --head --metrics-export-port=8090
    RAY_ADDRESS=auto python -m raylane serve serve.replica_cpus=1 &
    prometheus --config.file=prom.yml   # scrape_configs: [{job_name: ray,
                                        #   static_configs: [{targets: [127.0.0.1:8090]}]}]
    python -m raylane.serve.loadtest http://127.0.0.1:8000 --concurrency 8 --seconds 600

Needs Debian's Chromium (`apt-get install -y chromium`) and Playwright's Python package
(`pip install playwright`; never `playwright install`: the system Chromium is used).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[1] / "monitoring" / "grafana" / "raylane-serving.json"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
VIEWPORT = {"width": 1400, "height": 900}


def panels(application: str) -> list[tuple[str, list[str]]]:
    """(title, queries) of each panel, `$application` set."""
    board = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], [t["expr"].replace("$application", application) for t in p.get("targets", [])])
        for p in board["panels"]
        if p.get("targets")
    ]


def graph_url(prometheus: str, queries: list[str], range_: str) -> str:
    params = {}
    for i, query in enumerate(queries):
        params |= {f"g{i}.expr": query, f"g{i}.tab": "0", f"g{i}.range_input": range_}
    return f"{prometheus.rstrip('/')}/graph?{urllib.parse.urlencode(params)}"


def shoot(prometheus: str, out: Path, application: str, range_: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport=VIEWPORT)
        for n, (title, queries) in enumerate(panels(application), start=1):
            page.goto(graph_url(prometheus, queries, range_), wait_until="networkidle")
            # No selector to wait on: a panel with no series yet (a canary's share before any
            # rollout) draws no chart, only Prometheus' "empty query result".
            page.wait_for_timeout(2500)
            path = out / f"panel-{n:02d}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)
            print(f"{path}: {title}")
        browser.close()
    return shots


def compose(shots: list[Path], titles: list[str], out: Path, columns: int = 2) -> Path:
    """The panels in a grid, each under its title: the dashboard, as Prometheus draws it."""
    from PIL import Image, ImageDraw

    images = [Image.open(s).convert("RGB") for s in shots]
    width = max(i.width for i in images) // 2
    cells = [i.resize((width, int(i.height * width / i.width))) for i in images]
    cell_h = max(c.height for c in cells) + 28
    rows = (len(cells) + columns - 1) // columns
    sheet = Image.new("RGB", (width * columns, cell_h * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (cell, title) in enumerate(zip(cells, titles)):
        x, y = (k % columns) * width, (k // columns) * cell_h
        draw.text((x + 8, y + 8), title, fill="black")
        sheet.paste(cell, (x, y + 28))
    path = out / "dashboard.png"
    sheet.save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--out", default="docs/monitoring")
    parser.add_argument("--application", default="raylane")
    parser.add_argument("--range", default="15m", help="the graphs' time range (Prometheus duration)")
    args = parser.parse_args(argv)
    try:
        import playwright  # noqa: F401
    except ImportError:
        sys.exit("needs Playwright's Python package: pip install playwright (but never `playwright install`)")
    out = Path(args.out)
    shots = shoot(args.prometheus, out, args.application, args.range)
    print(compose(shots, [title for title, _ in panels(args.application)], out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
