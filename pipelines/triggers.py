"""What starts a retraining cycle (`loop.triggers`). Each trigger looks at one thing the loop can
see from outside the serving app, and says either why a cycle is due or what it saw:

- drift: the largest PSI the served champion reports (GET /model), held over the threshold for
  `drift_for_s`;
- feedback: rows in the feedback sink beyond those the last cycle trained on;
- new data: the files under `data.source`, by content hash, against the dataset's manifest (what
  the champion was trained on);
- schedule: time since the last cycle (before any, since the dataset was ingested);
- webhook: an alert POSTed to the loop (`raylane.pipelines.webhook`), queued until looked at.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from raylane.config import PipelineConfig


@dataclass
class Look:
    """One look at every trigger: the reasons a cycle is due, and what each trigger saw."""

    reasons: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def fire(self, reason: str) -> None:
        self.reasons.append(reason)

    def note(self, what: str) -> None:
        self.seen.append(what)


def look(cfg: PipelineConfig, state: dict[str, Any], webhook_reasons: list[str], now: float | None = None) -> Look:
    """Every configured trigger, once; `state` (the loop's record) keeps what spans looks: when
    drift began, what the last cycle consumed."""
    now = time.time() if now is None else now
    triggers, seen = cfg.loop.triggers, Look()
    if triggers.drift_psi:
        _drift(cfg, state, now, seen)
    if triggers.min_feedback:
        from raylane.serve.deploy import feedback_location

        rows = feedback_rows(feedback_location(cfg))
        new = rows - state.get("feedback_rows", 0)
        if new >= triggers.min_feedback:
            seen.fire(f"feedback: {new} new rows (loop.triggers.min_feedback {triggers.min_feedback})")
        else:
            seen.note(f"feedback {new}/{triggers.min_feedback} new rows")
    if triggers.new_data:
        changed = changed_sources(cfg)
        if changed:
            seen.fire(f"new data: {changed}")
        else:
            seen.note("source unchanged")
    if triggers.every_s:
        last = state.get("last_cycle_at") or last_ingest_at(cfg) or state.get("started_at") or now
        if now - last >= triggers.every_s:
            seen.fire(f"schedule: {now - last:.0f} s since the last cycle (loop.triggers.every_s {triggers.every_s:g})")
        else:
            seen.note(f"next scheduled in {triggers.every_s - (now - last):.0f} s")
    for reason in webhook_reasons:
        seen.fire(f"webhook: {reason}")
    return seen


def last_ingest_at(cfg: PipelineConfig) -> float | None:
    """When the dataset the champion was trained on was written: before any cycle, a schedule
    counts from there."""
    import datetime

    from raylane.manifest import read_manifest

    manifest = read_manifest(cfg.data.output_uri or str(cfg.output_path / "dataset"))
    return datetime.datetime.fromisoformat(manifest.created_at).timestamp() if manifest else None


def _drift(cfg: PipelineConfig, state: dict[str, Any], now: float, seen: Look) -> None:
    threshold, hold = cfg.loop.triggers.drift_psi, cfg.loop.triggers.drift_for_s
    psi = drift_psi(serve_url(cfg), cfg)
    if psi is None:
        seen.note("drift unknown (the served app did not answer GET /model with drift)")
        return
    if psi < threshold:
        state.pop("drift_since", None)
        seen.note(f"drift {psi:.3f} < {threshold:g}")
        return
    since = state.setdefault("drift_since", now)
    if now - since >= hold:
        seen.fire(f"drift: PSI {psi:.3f} >= {threshold:g} for {now - since:.0f} s (loop.triggers.drift_psi)")
    else:
        seen.note(f"drift {psi:.3f} >= {threshold:g} for {now - since:.0f} of {hold:g} s")


def serve_url(cfg: PipelineConfig) -> str:
    if cfg.loop.serve_url:
        return cfg.loop.serve_url.rstrip("/")
    host = "127.0.0.1" if cfg.serve.host in ("0.0.0.0", "::", "") else cfg.serve.host
    return f"http://{host}:{cfg.serve.port}"


def drift_psi(url: str, cfg: PipelineConfig) -> float | None:
    """The largest PSI over the features one replica reports; None when the app does not answer
    (not deployed, restarting) or has too few answers in its window to say."""
    import requests

    from raylane.serve.deploy import client_headers

    try:
        response = requests.get(f"{url}/model", headers=client_headers(cfg), timeout=10)
        drift = response.json().get("drift") if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    scores = (drift or {}).get("psi") or {}
    return max(scores.values()) if scores else None


def feedback_rows(sink: str) -> int:
    """Rows in the sink (JSON lines, or Parquet rows); an empty or missing sink holds none."""
    import pyarrow.parquet as pq

    from raylane.ingest.inputs import feedback_files

    rows = 0
    for file in feedback_files(sink):
        if file.format == "parquet":
            with file.fs.open_input_file(file.path) as handle:  # the footer: random access
                rows += pq.ParquetFile(handle).metadata.num_rows
        else:
            rows += file.digest_and_lines()[1]
    return rows


def changed_sources(cfg: PipelineConfig) -> str:
    """How the files under data.source differ from those the dataset's manifest records ("" when
    they do not): added, removed or changed files, by content hash. No dataset yet is a change."""
    from raylane.manifest import read_manifest
    from raylane.redact import redact
    from raylane.sources import list_files

    out = cfg.data.output_uri or str(cfg.output_path / "dataset")
    manifest = read_manifest(out)
    if manifest is None:
        return f"no dataset at {redact(out)} yet"
    recorded = {f.uri: f for f in manifest.sources if f.role == "data"}
    current = {redact(f.uri): f for f in list_files(cfg.data.source, cfg.data.format)}
    added = sorted(set(current) - set(recorded))
    removed = sorted(set(recorded) - set(current))
    changed = sorted(
        u
        for u in set(current) & set(recorded)
        # The size first: hashing a large source at every look is the slow part.
        if current[u].size != recorded[u].size or current[u].sha256() != recorded[u].sha256
    )
    parts = [
        f"{len(v)} {what} ({_names(v)})"
        for what, v in (("added", added), ("changed", changed), ("removed", removed))
        if v
    ]
    return ", ".join(parts)


def _names(uris: list[str]) -> str:
    shown = [u.rsplit("/", 1)[-1] for u in uris[:3]]
    return ", ".join(shown) + (", ..." if len(uris) > 3 else "")


def alert_reason(body: bytes) -> str:
    """What an Alertmanager webhook (or any JSON body with a "reason") asks for; "" for a body
    that only reports alerts resolved."""
    payload = json.loads(body or b"{}")
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    firing = [a for a in payload.get("alerts", []) if isinstance(a, dict) and a.get("status", "firing") == "firing"]
    if firing:
        names = sorted({str(a.get("labels", {}).get("alertname", "alert")) for a in firing})
        return f"{', '.join(names)} firing"
    if "alerts" in payload:
        return ""
    return str(payload.get("reason") or "requested")[:200]
