"""The gate: whether an evaluated model may replace the champion, from the configured rules.

Pure: it reads an evaluation and the champion's re-scored evaluation, and touches no registry and
no model; `raylane.evaluate.promote` acts on its decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raylane.config import GateConfig
from raylane.evaluate.report import Evaluation


@dataclass(frozen=True)
class Champion:
    version: str
    evaluation: Evaluation | None  # on the same test split; None when not comparable
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


def decide(gate: GateConfig, evaluation: Evaluation, champion: Champion | None) -> GateDecision:
    """Apply every enabled rule to the test evaluation (pure: no registry, no model)."""
    rules = []
    f1 = evaluation.weighted_f1
    if gate.min_weighted_f1:
        rules.append(
            Rule(
                "gate.min_weighted_f1",
                f1 >= gate.min_weighted_f1,
                f"test weighted F1 {f1:.4f} {'>=' if f1 >= gate.min_weighted_f1 else '<'} "
                f"gate.min_weighted_f1 {gate.min_weighted_f1}",
            )
        )
    if gate.min_class_f1:
        worst_name, worst = min(((n, row.f1) for n, row in evaluation.per_class.items()), key=lambda x: x[1])
        rules.append(
            Rule(
                "gate.min_class_f1",
                worst >= gate.min_class_f1,
                f"lowest class F1 {worst:.4f} ({worst_name}) {'>=' if worst >= gate.min_class_f1 else '<'} "
                f"gate.min_class_f1 {gate.min_class_f1}",
            )
        )
    if gate.max_regression >= 0 and champion is not None:
        if champion.evaluation is None:
            rules.append(
                Rule(
                    "gate.max_regression",
                    True,
                    f"champion version {champion.version} not comparable ({champion.note}); rule skipped",
                )
            )
        else:
            best = champion.evaluation.weighted_f1
            ok = f1 >= best - gate.max_regression
            rules.append(
                Rule(
                    "gate.max_regression",
                    ok,
                    f"test weighted F1 {f1:.4f} vs champion version {champion.version} {best:.4f} on the "
                    f"same test split: {'within' if ok else 'more than'} gate.max_regression "
                    f"{gate.max_regression} below",
                )
            )
    return GateDecision(all(r.passed for r in rules), rules)
