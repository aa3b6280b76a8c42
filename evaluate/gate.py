"""Promotion: register an evaluated model and move the alias if it passes the gate's rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raylane.config import PipelineConfig
from raylane.registry import ModelVersionRef, alias_version, log_and_register, set_alias
from raylane.tracking import RunRef


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # the rules that failed, in words


def decide(cfg: PipelineConfig, test_metrics: dict[str, Any]) -> GateDecision:
    failed = []
    floor = cfg.gate.min_weighted_f1
    if floor and test_metrics["weighted_f1"] < floor:
        failed.append(f"test weighted F1 {test_metrics['weighted_f1']:.4f} < gate.min_weighted_f1 {floor}")
    return GateDecision(not failed, failed)


@dataclass(frozen=True)
class Registration:
    version: ModelVersionRef
    decision: GateDecision
    alias: str | None  # the alias now on this version, if any
    previous_version: str | None


def register(cfg: PipelineConfig, run: RunRef, model_dir: str, labels: list[str], test_metrics: dict[str, Any],
             tags: dict[str, Any]) -> Registration:
    decision = decide(cfg, test_metrics)
    name = cfg.model.registered_name
    previous = alias_version(run.tracking_uri, name, cfg.gate.alias)
    version = log_and_register(
        run, model_dir, name, labels,
        tags={**tags, "test_weighted_f1": round(test_metrics["weighted_f1"], 4), "gate": "pass" if decision.passed else "fail"},
    )
    alias = cfg.gate.alias if decision.passed else "challenger"
    set_alias(run.tracking_uri, name, alias, version.version)
    if decision.passed and previous and previous != version.version:
        set_alias(run.tracking_uri, name, "previous", previous)
    run.set_tags({"registered_version": version.version, "alias": alias})
    return Registration(version, decision, alias, previous)
