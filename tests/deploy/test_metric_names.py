"""Dashboards and alerts name only metrics the running services export.

The exported names are read from every service's /metrics at test time, so a metric added by
any service is known at once, and a dashboard panel for a metric nobody exports fails here.
"""

from __future__ import annotations

import httpx
import pytest

from cbd.runtime import Platform
from cbd.serve import SERVICES
from tests.deploy.observability import (
    RULE_FILES,
    Query,
    all_dashboard_queries,
    exported_names,
    load_rules,
    recorded_names,
    rule_queries,
    unknown_metrics,
)

pytestmark = pytest.mark.e2e


async def scrape_names(platform: Platform) -> dict[str, set[str]]:
    """The series names each running service can export, from its /metrics page."""
    names: dict[str, set[str]] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for service in SERVICES:
            resp = await http.get(f"{platform.url(service)}/metrics")
            resp.raise_for_status()
            names[service] = exported_names(resp.text)
    return names


async def test_dashboards_and_alerts_name_only_exported_metrics(platform: Platform) -> None:
    by_service = await scrape_names(platform)
    exported = set().union(*by_service.values())
    rules = {"groups": [g for path in RULE_FILES for g in load_rules(path)["groups"]]}
    known = exported | recorded_names(rules)
    queries = all_dashboard_queries() + rule_queries(rules)
    assert unknown_metrics(queries, known) == {}
    # The same check, fed the real names, catches a panel for a metric nobody exports.
    bogus = Query("care-overview.json / Conversations", "sum(rate(cbd_conversations_total[5m]))")
    assert unknown_metrics([bogus], known) == {bogus.where: {"cbd_conversations_total"}}


async def test_every_service_exports_lag_and_the_care_metrics(platform: Platform) -> None:
    by_service = await scrape_names(platform)
    for service in SERVICES:
        assert "cbd_consumer_lag" in by_service[service], service
        assert "process_cpu_seconds_total" in by_service[service], service
    assert "cbd_feedback_ratings_total" in by_service["audit"]
    assert {"cbd_emotion_turns_total", "cbd_emotion_sentiment_sum"} <= by_service["emotion"]
