"""Dashboards: valid Grafana JSON, laid out cleanly, every query parses, bad names are caught."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import tool
from tests.deploy.observability import (
    DASHBOARDS,
    DEPLOY,
    Query,
    all_dashboard_queries,
    dashboard_queries,
    grafana_to_promql,
    load_dashboards,
    metric_names,
    unknown_metrics,
    unscoped_selectors,
)

SCHEMA = DEPLOY / "grafana" / "dashboard.schema.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"


def check_schema(*files: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema against the dashboard schema (deploy/grafana/dashboard.schema.json)."""
    return subprocess.run(
        [
            tool("check-jsonschema", "the [dev] extra"),
            "--schemafile",
            str(SCHEMA),
            *map(str, files),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dashboards_match_the_grafana_schema() -> None:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert len(files) == 6
    result = check_schema(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_rejects_a_broken_dashboard(tmp_path: Path) -> None:
    board = json.loads((DASHBOARDS / "llm.json").read_text())
    del board["panels"][0]["gridPos"]
    board["panels"][1]["targets"][0].pop("expr")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(board))
    assert check_schema(bad).returncode != 0


def _boxes(board: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    return [
        (p["gridPos"]["x"], p["gridPos"]["y"], p["gridPos"]["w"], p["gridPos"]["h"])
        for p in board["panels"]
    ]


@pytest.mark.parametrize("name", sorted(load_dashboards()))
def test_panels_are_laid_out_and_point_at_prometheus(name: str) -> None:
    board = load_dashboards()[name]
    # Panels name the data source through the `datasource` variable, so one dashboard serves
    # every Prometheus (one per environment or cluster); compose provisions just one.
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["type"] == "prometheus"
    provisioned = "${datasource}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    boxes = _boxes(board)
    for i, (x, y, w, h) in enumerate(boxes):
        assert x + w <= 24
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            overlap = x < x2 + w2 and x2 < x + w and y < y2 + h2 and y2 < y + h
            assert not overlap, f"{name}: panels overlap"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == provisioned
        assert panel.get("description"), f"{name}/{panel['title']} needs a description"


@pytest.mark.parametrize("name", sorted(load_dashboards()))
def test_every_query_is_scoped_to_the_chosen_namespaces(name: str) -> None:
    board = load_dashboards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    namespace = variables["namespace"]
    assert namespace["datasource"]["uid"] == "${datasource}"
    assert namespace["includeAll"]
    assert namespace["allValue"] == ".*"
    for query in dashboard_queries(name, board):
        unscoped = unscoped_selectors(query.expr)
        assert unscoped == [], f"{query.where}: selectors without the namespace variable"
        for panel_target in (t for p in board["panels"] for t in p.get("targets", [])):
            assert panel_target["datasource"]["uid"] == "${datasource}"


def test_the_scope_check_finds_an_unscoped_selector() -> None:
    assert unscoped_selectors('sum(rate(cbd_x_total{namespace=~"$namespace"}[5m]))') == []
    assert unscoped_selectors("sum(rate(cbd_x_total[5m])) / sum(cbd_y)") == [
        "cbd_x_total",
        "cbd_y",
    ]


def test_dashboard_uids_are_unique() -> None:
    uids = [b["uid"] for b in load_dashboards().values()]
    assert len(uids) == len(set(uids))


def test_every_query_parses_and_names_a_metric() -> None:
    queries = all_dashboard_queries()
    assert len(queries) >= 40
    for query in queries:
        assert metric_names(query.expr), query.where


def test_grafana_variables_become_durations() -> None:
    expr = "rate(x_total[$__rate_interval]) + increase(y_total[${__range}])"
    assert grafana_to_promql(expr) == "rate(x_total[5m]) + increase(y_total[5m])"


def test_the_checker_rejects_a_metric_nobody_exports() -> None:
    known = {"cbd_replies_total", "cbd_llm_errors_total"}
    queries = [
        Query("ok", 'sum(rate(cbd_replies_total{kind="llm"}[5m])) or vector(0)'),
        Query("typo", "sum(rate(cbd_reply_total[5m])) / sum(rate(cbd_llm_errors_total[5m]))"),
        Query("by name", '{__name__="cbd_gone_total"}'),
        Query("synthetic", 'up{job="ingest"}'),
    ]
    assert unknown_metrics(queries, known) == {
        "typo": {"cbd_reply_total"},
        "by name": {"cbd_gone_total"},
    }


def test_the_checker_rejects_a_dashboard_that_does_not_parse(tmp_path: Path) -> None:
    board = {"panels": [{"id": 1, "title": "x", "targets": [{"refId": "A", "expr": "sum(rate("}]}]}
    (query,) = dashboard_queries("bad.json", board)
    with pytest.raises(ValueError, match=r".+"):
        metric_names(query.expr)


def test_the_required_panels_exist() -> None:
    titles = {
        name: " | ".join(p["title"].lower() for p in board["panels"])
        for name, board in load_dashboards().items()
    }
    for needed in (
        "turns",
        "emotion mix",
        "sentiment",
        "escalations by reason",
        "queue wait",
        "csat",
    ):
        assert needed in titles["care-overview.json"], needed
    for needed in ("end to end", "p50", "p95", "p99"):
        assert needed in titles["turn-latency.json"], needed
    for needed in ("first token", "tokens / s", "errors", "fallback"):
        assert needed in titles["llm.json"], needed
    # vLLM's own server metrics, named as vLLM exports them (observability.EXTERNAL_METRICS).
    for needed in ("running and waiting", "kv-cache", "per output token", "end-to-end"):
        assert needed in titles["llm.json"], needed
    board = load_dashboards()["llm.json"]
    llm = {n for q in dashboard_queries("llm.json", board) for n in metric_names(q.expr)}
    assert {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
    } <= llm
    for needed in ("lag per group", "dead letters", "brokers see"):
        assert needed in titles["kafka.json"], needed
    assert "up" in titles["service-health.json"]


def test_compose_and_kubernetes_ship_the_same_dashboards() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    shipped = {Path(f).name for f in generator["files"]}
    assert shipped == {p.name for p in DASHBOARDS.glob("*.json")}
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./{DASHBOARDS.relative_to(DEPLOY.parent)}:/var/lib/grafana/dashboards:ro" in mounts
