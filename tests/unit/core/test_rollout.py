"""The canary's rules and routing, by hand-made evidence: each rule rolls back naming its key,
nothing is judged before min_requests, and dealt requests hold the share exactly."""

import pytest

from raylane.config.schema import CanarySettings
from raylane.rollout import Evidence, Rollout, dealt_to_challenger, judge, percentile

RULES = CanarySettings(steps=[5, 25, 100], step_s=0, min_requests=20, max_error_rate=0.05, max_p95_ms_ratio=2.0)


def evidence(requests: int, errors: int = 0, latency_s: float = 0.01, psi: float = 0.0) -> Evidence:
    seen = Evidence()
    seen.add({"requests": requests, "errors": errors, "latencies_s": [latency_s] * (requests - errors), "psi": psi})
    return seen


def test_a_step_waits_for_min_requests_and_step_s_then_advances():
    champion = evidence(200)
    assert judge(evidence(19, errors=19), champion, 0.0, RULES, 99).action == "wait"  # too few to say anything
    assert judge(evidence(20), champion, 0.0, RULES, 99).action == "advance"
    slow_steps = CanarySettings(steps=[5, 100], step_s=60, min_requests=20)
    assert judge(evidence(20), champion, 0.0, slow_steps, 59).action == "wait"
    assert judge(evidence(20), champion, 0.0, slow_steps, 61).action == "advance"


@pytest.mark.parametrize(
    "challenger, key",
    [
        (evidence(40, errors=3), "serve.canary.max_error_rate"),
        (evidence(40, latency_s=0.03), "serve.canary.max_p95_ms_ratio"),
        (evidence(40, psi=1.5), "serve.canary.max_psi"),
    ],
)
def test_each_broken_rule_rolls_back_naming_its_key(challenger, key):
    verdict = judge(challenger, evidence(200), 0.0, RULES, 99)
    assert verdict.action == "rollback" and verdict.reason.startswith(key), verdict


def test_live_accuracy_from_feedback_rolls_back_once_there_is_enough_of_it():
    rules = CanarySettings(steps=[5, 100], step_s=0, min_requests=20, min_feedback_accuracy=0.8, min_feedback=10)

    def with_feedback(feedback: int, correct: int) -> Evidence:
        seen = evidence(40)
        seen.add({"feedback": feedback, "correct": correct})
        return seen

    verdict = judge(with_feedback(10, 7), evidence(200), 0.0, rules, 99)
    assert verdict.action == "rollback" and verdict.reason.startswith("serve.canary.min_feedback_accuracy"), verdict
    assert "7 of 10" in verdict.reason
    assert judge(with_feedback(10, 8), evidence(200), 0.0, rules, 99).action == "advance"
    assert judge(with_feedback(9, 0), evidence(200), 0.0, rules, 99).action == "advance"  # too little to say
    assert judge(with_feedback(10, 0), evidence(200), 0.0, RULES, 99).action == "advance"  # the rule off (0)


def test_the_last_step_compares_latency_with_the_champion_of_earlier_steps():
    # At 100 % the champion answers nothing: its p95 from the steps before is the yardstick.
    assert judge(evidence(40, latency_s=0.03), Evidence(), 0.01, RULES, 99).action == "rollback"
    assert judge(evidence(40, latency_s=0.015), Evidence(), 0.01, RULES, 99).action == "advance"


@pytest.mark.parametrize("share", [5, 10, 25, 33.3, 50, 100])
def test_dealt_requests_hold_the_share_to_one_request(share):
    for n in (1, 7, 40, 333, 1000):
        to_challenger = sum(dealt_to_challenger(i, share) for i in range(1, n + 1))
        assert abs(to_challenger - n * share / 100) < 1


def test_the_record_round_trips_and_the_share_is_zero_once_it_ends():
    rollout = Rollout(version="3", champion="2", step=1, history=[{"step": 0, "share": 5}])
    again = Rollout.from_json(rollout.to_json())
    assert again == rollout and again.share([5, 25, 100]) == 25 and again.step_key == "3:1"
    again.state = "rolled_back"
    assert again.share([5, 25, 100]) == 0


def test_percentile_is_nearest_rank():
    assert percentile([], 95) == 0.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0
    assert percentile([1.0, 2.0], 50) == 1.0
