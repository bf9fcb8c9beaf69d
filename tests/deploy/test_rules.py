"""Alert rules: valid for Prometheus, unit-tested, one runbook each, the same on both targets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml

from tests.deploy.conftest import tool
from tests.deploy.observability import (
    ALERT_TESTS,
    ALERTS,
    PROMETHEUS_RULE,
    load_rules,
    metric_names,
    rule_queries,
)

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
PROMTOOL = "apt-get install prometheus (.ci/run does)"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; skip when it is not installed."""
    return subprocess.run(
        [tool("promtool", PROMTOOL), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(\n")
    assert promtool("check", "rules", str(bad)).returncode != 0


def test_alerts_fire_as_their_unit_tests_expect() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_expression_parses() -> None:
    queries = rule_queries(load_rules())
    assert len(queries) >= 8
    for query in queries:
        assert metric_names(query.expr), query.where


def test_the_required_alerts_exist() -> None:
    alerts = {q.where.split(" / ")[1] for q in rule_queries(load_rules())}
    assert {
        "CbdConsumerLagHigh",
        "CbdDeadLettersGrowing",
        "CbdLLMDown",
        "CbdLLMSlow",
        "CbdEscalationSpike",
        "CbdHighErrorRate",
        "CbdAuditFallingBehind",
        "CbdBrokerLagHigh",
        "CbdTurnLatencyBudgetBurnFast",
        "CbdTurnLatencyBudgetBurnSlow",
        "CbdReplySuccessBudgetBurnFast",
        "CbdReplySuccessBudgetBurnSlow",
    } <= alerts


def alert_names() -> set[str]:
    """Every alert in the rules file."""
    return {
        rule["alert"]
        for group in load_rules()["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_every_alert_has_a_unit_test_in_which_it_fires() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired: dict[str, list[dict[str, str]]] = {}
    for case in tests:
        for check in case.get("alert_rule_test", []):
            for alert in check["exp_alerts"]:
                fired.setdefault(check["alertname"], []).append(alert["exp_labels"])
    assert alert_names() - set(fired) == set(), "alerts no promtool test sees firing"
    for name, labels in fired.items():
        # The input series carry a namespace, as on Kubernetes: every alert must keep it.
        assert all(lab.get("namespace") for lab in labels), name


def _groupings(expr: str) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            modifier = node.modifier
            if modifier is None:
                found.append(("none", []))
            else:
                kind = "by" if modifier.type == promql_parser.AggModifierType.By else "without"
                found.append((kind, list(modifier.labels)))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_every_aggregation_in_a_rule_keeps_the_namespace() -> None:
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            for kind, labels in _groupings(str(rule["expr"])):
                assert kind == "by", f"{name}: {kind} {labels}"
                assert "namespace" in labels, f"{name}: {kind} {labels}"
            if "alert" in rule:
                assert "$labels.namespace" in rule["annotations"]["summary"], name


def test_the_namespace_check_catches_a_rule_that_drops_it() -> None:
    assert _groupings("sum(rate(cbd_replies_total[5m])) > 1") == [("none", [])]
    assert _groupings("sum by (group) (cbd_consumer_lag)") == [("by", ["group"])]


def test_every_alert_has_a_severity_and_a_runbook_entry() -> None:
    headings = {
        m.group(1).strip().lower()
        for m in re.finditer(r"^#{2,4} (.+)$", OPERATIONS.read_text(), re.MULTILINE)
    }
    for group in load_rules()["groups"]:
        for rule in (r for r in group["rules"] if "alert" in r):
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
            assert anchor == rule["alert"].lower()
            assert rule["alert"].lower() in headings, f"no runbook heading for {rule['alert']}"


def test_the_prometheus_rule_carries_the_same_groups() -> None:
    operator = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"] == load_rules(), (
        "deploy/prometheus/alerts.yml and the PrometheusRule differ: copy the groups across"
    )


@pytest.mark.parametrize("path", [ALERTS, PROMETHEUS_RULE])
def test_rule_files_are_yaml(path: Path) -> None:
    assert yaml.safe_load(path.read_text())
