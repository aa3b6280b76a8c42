"""The gate's rules as a pure function of the test evaluation and the re-scored champion's."""

import pytest

from raylane.config import GateConfig
from raylane.evaluate.gate import Champion, decide
from raylane.evaluate.report import ClassScores, Evaluation


def _metrics(weighted_f1: float, class_f1: dict[str, float] | None = None) -> Evaluation:
    class_f1 = class_f1 or {"a": weighted_f1, "b": weighted_f1}
    return Evaluation(
        split="test",
        model_dir="m",
        rows=10,
        labels=list(class_f1),
        metrics={"weighted_f1": weighted_f1},
        per_class={n: ClassScores(precision=f, recall=f, f1=f, support=5) for n, f in class_f1.items()},
    )


def _failed(decision) -> list[str]:
    return [r.key for r in decision.rules if not r.passed]


def test_no_rules_and_no_champion_pass():
    decision = decide(GateConfig(), _metrics(0.1), None)
    assert decision.passed and decision.rules == []


@pytest.mark.parametrize("f1, passed", [(0.90, True), (0.8999, False)])
def test_absolute_weighted_f1_floor(f1, passed):
    decision = decide(GateConfig(min_weighted_f1=0.9), _metrics(f1), None)
    assert decision.passed is passed and _failed(decision) == ([] if passed else ["gate.min_weighted_f1"])


def test_class_floor_names_the_worst_class():
    decision = decide(GateConfig(min_class_f1=0.5), _metrics(0.9, {"good": 0.95, "rare": 0.4}), None)
    assert _failed(decision) == ["gate.min_class_f1"] and "rare" in decision.reasons[0]


@pytest.mark.parametrize(
    "ours, theirs, allowed, passed",
    [
        (0.80, 0.85, 0.0, False),  # worse than the champion
        (0.85, 0.80, 0.0, True),  # better
        (0.85, 0.85, 0.0, True),  # equal is not worse
        (0.84, 0.85, 0.02, True),  # within the allowed drop
        (0.82, 0.85, 0.02, False),  # beyond it
    ],
)
def test_no_worse_than_the_champion(ours, theirs, allowed, passed):
    decision = decide(GateConfig(max_regression=allowed), _metrics(ours), Champion("3", _metrics(theirs)))
    assert decision.passed is passed
    assert "champion version 3" in decision.rules[0].detail


def test_negative_max_regression_disables_the_comparison():
    assert decide(GateConfig(max_regression=-1), _metrics(0.1), Champion("3", _metrics(0.9))).passed


def test_incomparable_champion_skips_the_rule_and_says_why():
    decision = decide(GateConfig(), _metrics(0.5), Champion("3", None, "it predicts ['x'], the test split has ['y']"))
    assert decision.passed and "not comparable" in decision.rules[0].detail


def test_every_failed_rule_is_reported():
    decision = decide(GateConfig(min_weighted_f1=0.9, min_class_f1=0.9), _metrics(0.5), Champion("1", _metrics(0.6)))
    assert _failed(decision) == ["gate.min_weighted_f1", "gate.min_class_f1", "gate.max_regression"]
