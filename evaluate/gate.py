"""The gate: whether an evaluated model may replace the champion, from the configured rules.

Pure: it reads an evaluation and the champion's re-scored evaluation, and touches no registry and
no model; `raylane.evaluate.promote` acts on its decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raylane.config import GateConfig
from raylane.evaluate.report import Evaluation
from raylane.tasks import get_task


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


_NAMES = {"weighted_f1": "weighted F1", "micro_f1": "micro F1", "rmse": "RMSE"}


def decide(
    gate: GateConfig, evaluation: Evaluation, champion: Champion | None, task: str = "text_classification"
) -> GateDecision:
    """Apply every enabled rule to the test evaluation (pure: no registry, no model): the task's
    absolute rules, then no worse than the champion (and, for a distilled model, its teacher) on
    the task's headline metric."""
    target = get_task(task).target
    rules = [Rule(key, passed, detail) for key, passed, detail in target.gate_rules(gate, evaluation)]
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
            rules.append(
                _no_worse(
                    target,
                    evaluation,
                    champion.evaluation.metrics,
                    "gate.max_regression",
                    gate.max_regression,
                    f"champion version {champion.version}",
                )
            )
    if gate.max_teacher_gap >= 0 and evaluation.teacher is not None:
        teacher = evaluation.teacher
        rules.append(
            _no_worse(
                target,
                evaluation,
                teacher.metrics,
                "gate.max_teacher_gap",
                gate.max_teacher_gap,
                f"teacher {teacher.teacher}",
            )
        )
    return GateDecision(all(r.passed for r in rules), rules)


def _no_worse(target, evaluation: Evaluation, theirs: dict[str, float], key: str, margin: float, who: str):
    """The rule `key`: the test headline metric at most `margin` worse than `who`'s."""
    headline = target.headline
    ours, their = evaluation.metrics[headline], theirs[headline]
    lower = target.metric_mode(headline) == "min"
    ok = ours <= their + margin if lower else ours >= their - margin
    return Rule(
        key,
        ok,
        f"test {_NAMES.get(headline, headline)} {ours:.4f} vs {who} {their:.4f} on the same test split: "
        f"{'within' if ok else 'more than'} {key} {margin} {'above' if lower else 'below'}",
    )
