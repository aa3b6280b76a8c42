"""The shipped alert rules and dashboard (monitoring/): promtool validates the rules and runs their
unit tests (each alert fires on a synthetic series that breaks it and not on a healthy one), and
the dashboard's queries are valid PromQL. That they name only metrics a running app exports is
checked against a real app in tests/integration/serve/test_canary.py."""

import json
import shutil
import subprocess

import pytest
import yaml

from tests.paths import REPO_ROOT

MONITORING = REPO_ROOT / "monitoring"
RULES = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana" / "raylane-serving.json"

# Debian's `prometheus` package; .ci/run installs it.
promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool not installed (apt-get install prometheus)")


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def as_recording_rules(directory, queries: list[str]):
    """A rules file with each query as a recording rule: what promtool can parse on its own."""
    rules = [{"record": f"raylane:dashboard_query_{i}", "expr": query} for i, query in enumerate(queries)]
    path = directory / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


def run_promtool(*args: str, cwd=MONITORING) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_the_rules_are_valid_and_every_alert_passes_its_unit_tests():
    checked = run_promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run_promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_runbook_a_severity_and_a_unit_test():
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    rules = alerts()
    assert len(rules) >= 6
    for rule in rules:
        assert rule["annotations"]["runbook"] and rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["alert"] in tested, f"{rule['alert']} has no test that makes it fire"


@needs_promtool
def test_the_dashboard_queries_are_valid_promql(tmp_path):
    """Each query as a recording rule, which promtool parses; the dashboard's variable replaced by
    what Grafana would put there."""
    queries = dashboard_queries()
    assert len(queries) >= 10
    path = as_recording_rules(tmp_path, [q.replace("$application", ".*") for q in queries])
    checked = run_promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_a_broken_query_is_caught(tmp_path):
    """The check above can fail: promtool refuses a query with a typo."""
    assert run_promtool("check", "rules", str(as_recording_rules(tmp_path, ["sum by (a (ray_x)"]))).returncode != 0
