"""Promotion: decide from the configured rules whether an evaluated model may replace the
champion, register it either way, and move the aliases.

Pass: the new version gets `gate.alias` (champion) and the version it replaces gets `previous`.
Fail: the new version gets `challenger`, the champion stays, and the report says which rule failed.
The champion is re-scored on the same test split, so "no worse than the champion" compares like
with like even when the data has changed since it was promoted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluate.card import model_card
from raylane.config import GateConfig, PipelineConfig
from raylane.dataset import DatasetInfo
from raylane.drift import reference_from_manifest, write_reference
from raylane.registry import ModelVersionRef, alias_version, log_and_register, resolve_model, set_alias
from raylane.tracking import RunRef

CHALLENGER, PREVIOUS = "challenger", "previous"


@dataclass(frozen=True)
class Champion:
    version: str
    metrics: dict[str, Any] | None  # on the same test split; None when not comparable
    note: str = ""


@dataclass(frozen=True)
class Rule:
    key: str  # the config key that set it
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    rules: list[Rule] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """The rules that failed, in words."""
        return [r.detail for r in self.rules if not r.passed]


def decide(gate: GateConfig, metrics: dict[str, Any], champion: Champion | None) -> GateDecision:
    """Apply every enabled rule to the test metrics (pure: no registry, no model)."""
    rules = []
    f1 = metrics["weighted_f1"]
    if gate.min_weighted_f1:
        rules.append(Rule("gate.min_weighted_f1", f1 >= gate.min_weighted_f1,
                          f"test weighted F1 {f1:.4f} {'>=' if f1 >= gate.min_weighted_f1 else '<'} "
                          f"gate.min_weighted_f1 {gate.min_weighted_f1}"))
    if gate.min_class_f1:
        worst_name, worst = min(((n, row["f1"]) for n, row in metrics["per_class"].items()), key=lambda x: x[1])
        rules.append(Rule("gate.min_class_f1", worst >= gate.min_class_f1,
                          f"lowest class F1 {worst:.4f} ({worst_name}) {'>=' if worst >= gate.min_class_f1 else '<'} "
                          f"gate.min_class_f1 {gate.min_class_f1}"))
    if gate.max_regression >= 0 and champion is not None:
        if champion.metrics is None:
            rules.append(Rule("gate.max_regression", True, f"champion version {champion.version} not comparable "
                                                           f"({champion.note}); rule skipped"))
        else:
            best = champion.metrics["weighted_f1"]
            ok = f1 >= best - gate.max_regression
            rules.append(Rule("gate.max_regression", ok,
                              f"test weighted F1 {f1:.4f} vs champion version {champion.version} {best:.4f} on the "
                              f"same test split: {'within' if ok else 'more than'} gate.max_regression "
                              f"{gate.max_regression} below"))
    return GateDecision(all(r.passed for r in rules), rules)


def score_champion(cfg: PipelineConfig, dataset: DatasetInfo, tracking_uri: str, out_dir: Path) -> Champion | None:
    """The current champion re-scored on this dataset's test split; None when there is none."""
    from evaluate.stage import model_labels, run as evaluate

    if cfg.gate.max_regression < 0:
        return None  # the rule is off: no need to load and score the champion
    version = alias_version(tracking_uri, cfg.model.registered_name, cfg.gate.alias)
    if version is None:
        return None
    resolved = resolve_model(f"models:/{cfg.model.registered_name}/{version}", tracking_uri)
    theirs, ours = sorted(model_labels(resolved.model_dir)), sorted(dataset.label_names)
    if theirs != ours:
        return Champion(version, None, f"it predicts {theirs}, the test split has {ours}")
    return Champion(version, evaluate(cfg, resolved.model_dir, dataset, out_dir, run=None).metrics)


@dataclass(frozen=True)
class Registration:
    version: ModelVersionRef
    decision: GateDecision
    alias: str  # the alias now on this version: gate.alias or challenger
    previous_version: str | None  # the champion before this registration, if any


def register(cfg: PipelineConfig, run: RunRef, model_dir: str, dataset: DatasetInfo, test_metrics: dict[str, Any],
             champion: Champion | None = None, lineage: dict[str, str] | None = None) -> Registration:
    """Decide, then register the model (with its card and lineage tags) and move the aliases."""
    decision = decide(cfg.gate, test_metrics, champion)
    name = cfg.model.registered_name
    previous = alias_version(run.tracking_uri, name, cfg.gate.alias)
    lineage = {"dataset_digest": dataset.digest, "dataset_uri": dataset.uri, "register_run_id": run.run_id,
               **(lineage or {})}
    card = model_card(cfg, dataset, test_metrics, decision, champion, lineage)
    (Path(model_dir) / "README.md").write_text(card)  # the Hugging Face place for a model card
    # What serving replicas measure drift against: the training split's label mix and lengths.
    write_reference(model_dir, reference_from_manifest(dataset.manifest))
    run.log_text(card, "model_card.md")
    version = log_and_register(
        run, model_dir, name, dataset.label_names, description=card,
        tags={**lineage, "test_weighted_f1": round(test_metrics["weighted_f1"], 4),
              "gate": "pass" if decision.passed else "fail", **_variant_tags(test_metrics)},
    )
    alias = cfg.gate.alias if decision.passed else CHALLENGER
    set_alias(run.tracking_uri, name, alias, version.version)
    if decision.passed and previous and previous != version.version:
        set_alias(run.tracking_uri, name, PREVIOUS, previous)
    report = {"passed": decision.passed, "rules": [asdict(r) for r in decision.rules], "version": version.version,
              "alias": alias, "previous_champion": previous,
              "champion_metrics": champion.metrics if champion and champion.metrics else None}
    run.log_dict(report, "gate.json")
    if champion and champion.metrics:
        run.log_metrics({"champion_test_weighted_f1": champion.metrics["weighted_f1"]})
    run.set_tags({"registered_version": version.version, "alias": alias, "gate": "pass" if decision.passed else "fail"})
    return Registration(version, decision, alias, previous)


def _variant_tags(test_metrics: dict[str, Any]) -> dict[str, Any]:
    """The compressed serving variant's measured cost, where evaluate scored one."""
    variant = test_metrics.get("serving_variant")
    if not variant:
        return {}
    return {"serving_variant": variant["variant"],
            "serving_accuracy_delta_points": variant["accuracy_delta_points"]}


def format_decision(reg: Registration) -> str:
    lines = [f"{reg.version.name} version {reg.version.version} -> alias '{reg.alias}' "
             f"(gate {'passed' if reg.decision.passed else 'REJECTED'})"]
    lines += [f"  [{'ok' if r.passed else 'FAIL'}] {r.detail}" for r in reg.decision.rules]
    if not reg.decision.rules:
        lines.append("  no gate rules enabled")
    return "\n".join(lines)
