"""Promotion: register an evaluated model either way and move the registry's aliases on the
gate's decision.

Pass: the new version gets `gate.alias` (champion) and the version it replaces gets `previous`;
under `serve.rollout: canary` it gets `challenger` instead (when there is a champion), and the
serving app walks it through the canary's steps to champion or rolls it back.
Fail: the new version gets `rejected`, the champion stays, and the report says which rule failed.
The champion is re-scored on the same test split first, so "no worse than the champion" compares
like with like even when the data has changed since it was promoted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig
from raylane.config.schema import DistillSettings
from raylane.dataset import DatasetInfo
from raylane.drift import reference_from_manifest, write_reference
from raylane.evaluate.card import model_card
from raylane.evaluate.gate import Champion, GateDecision, decide
from raylane.evaluate.report import Evaluation
from raylane.registry import ModelVersionRef, alias_version, log_and_register, resolve_model, set_alias
from raylane.rollout import CHALLENGER, PREVIOUS, REJECTED
from raylane.tasks import answer_alike, get_task
from raylane.tasks.saved import read_saved_task
from raylane.tracking import RunRef


def score_champion(cfg: PipelineConfig, dataset: DatasetInfo, tracking_uri: str, out_dir: Path) -> Champion | None:
    """The current champion re-scored on this dataset's test split; None when there is none."""
    from raylane.evaluate.stage import run_evaluation

    if cfg.gate.max_regression < 0:
        return None  # the rule is off: no need to load and score the champion
    version = alias_version(tracking_uri, cfg.model.registered_name, cfg.gate.alias)
    if version is None:
        return None
    resolved = resolve_model(f"models:/{cfg.model.registered_name}/{version}", tracking_uri)
    saved = read_saved_task(resolved.model_dir)
    if not answer_alike(cfg.task, saved.task):
        return Champion(version, None, f"it is a {saved.task} model, this run trains {cfg.task}")
    theirs, ours = sorted(saved.labels), sorted(dataset.label_names)
    if theirs != ours:
        return Champion(version, None, f"it predicts {theirs}, the test split has {ours}")
    # The champion alone: a distilled run's teacher was scored beside the new model already.
    alone = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, distill=DistillSettings()))
    return Champion(version, run_evaluation(alone, resolved.model_dir, dataset, out_dir))


@dataclass(frozen=True)
class Promotion:
    version: ModelVersionRef
    decision: GateDecision
    alias: str  # the alias now on this version: gate.alias, challenger (a canary to walk) or rejected
    previous_version: str | None  # the champion before this registration, if any


def promote(
    cfg: PipelineConfig,
    mlflow_run: RunRef,
    model_dir: str,
    dataset: DatasetInfo,
    evaluation: Evaluation,
    champion: Champion | None = None,
    lineage: dict[str, str] | None = None,
) -> Promotion:
    """Decide, then register the model (with its card and lineage tags) and move the aliases."""
    decision = decide(cfg.gate, evaluation, champion, cfg.task)
    headline = get_task(cfg.task).target.headline
    name = cfg.model.registered_name
    previous = alias_version(mlflow_run.tracking_uri, name, cfg.gate.alias)
    lineage = {
        "dataset_digest": dataset.digest,
        "dataset_uri": dataset.uri,
        "register_run_id": mlflow_run.run_id,
        **(lineage or {}),
    }
    card = model_card(cfg, dataset, evaluation, decision, champion, lineage)
    (Path(model_dir) / "README.md").write_text(card)  # the Hugging Face place for a model card
    # What serving replicas measure drift against: the training split's label mix and lengths.
    write_reference(model_dir, reference_from_manifest(dataset.manifest))
    mlflow_run.log_text(card, "model_card.md")
    version = log_and_register(
        mlflow_run,
        model_dir,
        name,
        dataset.label_names,
        description=card,
        tags={
            **lineage,
            "task": cfg.task,
            f"test_{headline}": round(evaluation.metrics[headline], 4),
            "gate": "pass" if decision.passed else "fail",
            **_variant_tags(evaluation, headline),
        },
        params={k: v for k, v in cfg.flat().items() if k.startswith(("model.", "train."))},
    )
    # The test scores again, now linked to the LoggedModel and the test split: the model's page
    # in the UI lists them, each with the dataset it was measured on.
    mlflow_run.log_metrics(
        {f"test_{k}": v for k, v in evaluation.metrics.items()},
        model_id=version.model_id,
        dataset=(f"{dataset.name}/test", dataset.digest),
    )
    canary = decision.passed and cfg.serve.rollout == "canary" and previous is not None
    alias = (CHALLENGER if canary else cfg.gate.alias) if decision.passed else REJECTED
    set_alias(mlflow_run.tracking_uri, name, alias, version.version)
    if decision.passed and not canary and previous and previous != version.version:
        set_alias(mlflow_run.tracking_uri, name, PREVIOUS, previous)
    report = {
        "passed": decision.passed,
        "rules": [asdict(r) for r in decision.rules],
        "version": version.version,
        "alias": alias,
        "previous_champion": previous,
        "champion_metrics": champion.evaluation.metrics if champion and champion.evaluation else None,
    }
    mlflow_run.log_dict(report, "gate.json")
    if champion and champion.evaluation:
        mlflow_run.log_metrics({f"champion_test_{headline}": champion.evaluation.metrics[headline]})
    mlflow_run.set_tags(
        {"registered_version": version.version, "alias": alias, "gate": "pass" if decision.passed else "fail"}
    )
    return Promotion(version, decision, alias, previous)


def _variant_tags(evaluation: Evaluation, headline: str) -> dict[str, Any]:
    """The compressed serving variant's measured cost in the task's headline metric (accuracy too,
    where the task has it), where evaluate scored one."""
    variant = evaluation.serving_variant
    if not variant:
        return {}
    tags = {"serving_variant": variant.variant}
    for metric in dict.fromkeys(("accuracy", headline)):
        if metric in variant.delta_points:
            tags[f"serving_{metric}_delta_points"] = variant.delta_points[metric]
    return tags


def format_decision(reg: Promotion) -> str:
    lines = [
        f"{reg.version.name} version {reg.version.version} -> alias '{reg.alias}' "
        f"(gate {'passed' if reg.decision.passed else 'REJECTED'})"
    ]
    lines += [f"  [{'ok' if r.passed else 'FAIL'}] {r.detail}" for r in reg.decision.rules]
    if not reg.decision.rules:
        lines.append("  no gate rules enabled")
    return "\n".join(lines)
