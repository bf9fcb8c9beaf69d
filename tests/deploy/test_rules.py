"""Alert rules: valid for Prometheus, unit-tested, one runbook each, the same on both targets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.deploy.conftest import tool
from tests.deploy.observability import (
    ALERT_TESTS,
    ALERTS,
    CARE_ALERT_TESTS,
    CARE_ALERTS,
    PROMETHEUS_RULE,
    RULE_FILES,
    load_rules,
    metric_names,
    rule_queries,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUNBOOK_URL = "https://github.com/care-by-design/care-by-design/blob/main/docs/"
TESTED = {ALERTS: ALERT_TESTS, CARE_ALERTS: CARE_ALERT_TESTS}
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


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_promtool_accepts_the_rules(rules: Path) -> None:
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(\n")
    assert promtool("check", "rules", str(bad)).returncode != 0


@pytest.mark.parametrize("tests", TESTED.values(), ids=lambda p: p.name)
def test_alerts_fire_as_their_unit_tests_expect(tests: Path) -> None:
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_expression_parses() -> None:
    queries = rule_queries(load_rules())
    assert len(queries) >= 8
    for query in queries:
        assert metric_names(query.expr), query.where


def test_the_required_alerts_exist() -> None:
    alerts = {q.where.split(" / ")[1] for q in rule_queries({"groups": all_groups()})}
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
        "CbdCareFailureShareHigh",
        "CbdComposedRepliesHigh",
    } <= alerts


def alert_names(path: Path = ALERTS) -> set[str]:
    """Every alert in a rules file."""
    return {
        rule["alert"]
        for group in load_rules(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def all_groups() -> list[dict[str, Any]]:
    """The groups of every rules file, in the PrometheusRule's order."""
    return [group for path in RULE_FILES for group in load_rules(path)["groups"]]


@pytest.mark.parametrize(("rules", "tests_file"), TESTED.items(), ids=lambda p: p.name)
def test_every_alert_has_a_unit_test_in_which_it_fires(rules: Path, tests_file: Path) -> None:
    tests = yaml.safe_load(tests_file.read_text())["tests"]
    fired: dict[str, list[dict[str, str]]] = {}
    for case in tests:
        for check in case.get("alert_rule_test", []):
            for alert in check["exp_alerts"]:
                fired.setdefault(check["alertname"], []).append(alert["exp_labels"])
    assert alert_names(rules) - set(fired) == set(), "alerts no promtool test sees firing"
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
    for group in all_groups():
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


def headings(doc: Path) -> set[str]:
    """A Markdown page's section headings, lower-cased (GitHub's anchors for one-word ones)."""
    return {
        m.group(1).strip().lower()
        for m in re.finditer(r"^#{2,4} (.+)$", doc.read_text(), re.MULTILINE)
    }


def test_every_alert_has_a_severity_and_a_runbook_entry() -> None:
    for group in all_groups():
        for rule in (r for r in group["rules"] if "alert" in r):
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            url = rule["annotations"]["runbook_url"]
            assert url.startswith(RUNBOOK_URL), url
            page, anchor = url.removeprefix(RUNBOOK_URL).rsplit("#", 1)
            assert anchor == rule["alert"].lower()
            assert anchor in headings(DOCS / page), f"no runbook heading for {rule['alert']}"


def test_the_prometheus_rule_carries_the_same_groups() -> None:
    operator = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"] == {"groups": all_groups()}, (
        "the rules files (alerts.yml, care-alerts.yml) and the PrometheusRule differ: "
        "copy the groups across"
    )


def test_rule_group_names_are_unique_across_files() -> None:
    # One PrometheusRule carries every file's groups; Prometheus refuses a repeated name.
    names = [group["name"] for group in all_groups()]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("path", [*RULE_FILES, PROMETHEUS_RULE])
def test_rule_files_are_yaml(path: Path) -> None:
    assert yaml.safe_load(path.read_text())
