"""Every dashboard panel shows live data from a running platform.

No Grafana server installs offline, so this runs what Grafana would: a real Prometheus
(Debian's `prometheus` package) scrapes the services of the session's platform, the test
drives customer traffic through them (bot replies, a handoff claimed by an agent, ratings and a
poison message), and then every panel's PromQL, with Grafana's time variables filled in, must
return a value. The alert rules are loaded too and must all evaluate without error.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets
import yaml
from aiokafka import AIOKafkaProducer

from cbd.procs import free_port
from cbd.runtime import Platform
from cbd.serve import SERVICES
from shared.events import Channel, Feedback, FeedbackReceivedEvent
from shared.topics import Topic
from tests.deploy.observability import (
    ALERTS,
    DEPLOY,
    EXTERNAL_METRICS,
    all_dashboard_queries,
    grafana_to_promql,
    metric_names,
)

pytestmark = pytest.mark.e2e

# Metrics that only move when something fails; a healthy run leaves them without series, and
# their panels fall back to `or vector(0)`.
FAULT_ONLY = {"cbd_llm_errors_total", "cbd_handler_retries_total"}
# Care-loop outcomes that take days (FCR settles a window after the close), people (reviews)
# or consenting customers with old issues (follow-ups); a short run leaves them without series.
FAULT_ONLY |= {
    "cbd_first_contact_resolutions_total",
    "cbd_repeat_contacts_total",
    "cbd_care_nps_ratings_total",
    "cbd_review_scores_sum",
    "cbd_review_scores_count",
    "cbd_review_queue_items_total",
    "cbd_followups_total",
}


@pytest.fixture(scope="module")
def prometheus(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping every service once a second; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus; .ci/run does)")
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": name,
                "static_configs": [
                    {
                        "targets": [platform.url(name).removeprefix("http://")],
                        # What Kubernetes service discovery adds; dashboards and alerts use it.
                        "labels": {"namespace": "care-by-design"},
                    }
                ],
            }
            for name in SERVICES
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (work / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def instant(http: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    resp = await http.get("/api/v1/query", params={"query": expr})
    body = resp.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def has_value(result: list[dict[str, Any]]) -> bool:
    """Whether a result holds at least one real number (histogram_quantile of nothing is NaN)."""
    return any(not math.isnan(float(r["value"][1])) for r in result)


AUDIT_COUNTS = (
    "sum(cbd_conversations_closed_total)",
    "sum(cbd_feedback_ratings_total)",
)
"""What audit counts of a handoff-and-ratings round (the care-loop panels read them)."""


async def total(http: httpx.AsyncClient, expr: str) -> float:
    """A scalar aggregate's value now (0 while it has no series)."""
    result = await instant(http, expr)
    return float(result[0]["value"][1]) if result else 0.0


async def grown(http: httpx.AsyncClient, expr: str, before: float, timeout_s: float = 60) -> None:
    """Wait until Prometheus has scraped `expr` above `before`."""
    deadline = time.monotonic() + timeout_s
    while await total(http, expr) <= before:
        assert time.monotonic() < deadline, f"{expr} stayed at {before} for {timeout_s} s"
        await asyncio.sleep(0.5)


async def bot_turn(platform: Platform) -> bool:
    """One customer message answered by the bot; True if the LLM wrote it (not the fallback)."""
    conversation_id, customer_id = f"conv-{secrets.token_hex(6)}", f"cust-{secrets.token_hex(4)}"
    base = platform.url("ingest").replace("http://", "ws://")
    url = f"{base}/v1/conversations/{conversation_id}/ws?customer_id={customer_id}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "message", "text": "Thanks, the parcel arrived!"}))
        deadline = time.monotonic() + 60
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if frame["type"] == "reply":
                return "llm_fallback" not in frame["flags"]
            assert time.monotonic() < deadline


async def handoff(platform: Platform, agent: httpx.AsyncClient) -> None:
    """A customer asks for a person; an agent claims the ticket and resolves it."""
    conversation_id, customer_id = f"conv-{secrets.token_hex(6)}", f"cust-{secrets.token_hex(4)}"
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=20) as http:
        resp = await http.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"customer_id": customer_id, "text": "This is useless, I want a human agent now!"},
        )
        assert resp.status_code == 202, resp.text
    for _ in range(150):
        tickets = (await agent.get("/v1/agent/queue")).json()["tickets"]
        mine = [t for t in tickets if t["conversation_id"] == conversation_id]
        if mine:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("no ticket was opened")
    ticket = mine[0]["ticket_id"]
    assert (await agent.post(f"/v1/agent/tickets/{ticket}/claim")).status_code == 200
    assert (await agent.post(f"/v1/agent/tickets/{ticket}/resolve")).status_code == 200


async def ratings_and_poison(platform: Platform, ratings: tuple[int, ...]) -> None:
    """Satisfaction ratings on feedback.received, and one unreadable turn for the DLQ."""
    producer = AIOKafkaProducer(
        bootstrap_servers=platform.stack.env()["CBD_KAFKA_BOOTSTRAP_SERVERS"]
    )
    await producer.start()
    try:
        for rating in ratings:
            event = FeedbackReceivedEvent.create(
                conversation_id=f"conv-{secrets.token_hex(6)}",
                customer_id="cust-rater",
                channel=Channel.WEB,
                payload=Feedback(rating=rating),
            )
            await producer.send_and_wait(
                Topic.FEEDBACK_RECEIVED.value, event.model_dump_json().encode(), key=b"rater"
            )
        await producer.send_and_wait(
            Topic.TURN_RECEIVED.value, b'{"event_id": "not-a-uuid"}', key=b"bad"
        )
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
async def prom(prometheus: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the test's Prometheus."""
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as http:
        yield http


async def test_every_panel_shows_live_data(platform: Platform, prom: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 20
    while len(await instant(prom, "up == 1")) < len(SERVICES):
        assert time.monotonic() < deadline, "Prometheus could not scrape every service"
        await asyncio.sleep(0.5)

    agent = httpx.AsyncClient(base_url=platform.url("escalation"), timeout=20)
    login = await agent.post("/v1/agent/login", json={"agent_id": "agent", "password": "agent"})
    agent.headers["Authorization"] = f"Bearer {login.json()['token']}"
    try:
        # Two of everything, a scrape apart: a labelled series is born at its first value, so
        # only the second event gives rate() something to measure. Bot turns go first and
        # alone: the local LLM serves one request at a time, and a handoff's agent-assist
        # request would hold a bot reply up. At least one bot reply must come from the LLM
        # (its completion panels); on a crowded machine it can miss its time budget and the
        # fallback answers instead, so a few more tries are allowed.
        turns = answered = 0
        while turns < 2 or not answered:
            assert turns < 5, "the LLM never finished a reply in time (machine overloaded?)"
            answered += await bot_turn(platform)
            turns += 1
            await asyncio.sleep(1.2)
        # Audit counts closes and ratings off the reply path, in batches: both rounds could
        # land in one scrape, and a series born at its final value never increases. So the
        # second round waits until Prometheus has seen audit count the first.
        for ratings in ((5, 2), (4, 5)):
            seen = {expr: await total(prom, expr) for expr in AUDIT_COUNTS}
            await asyncio.gather(handoff(platform, agent), ratings_and_poison(platform, ratings))
            for expr, before in seen.items():
                await grown(prom, expr, before)
    finally:
        await agent.aclose()

    # Panels on vLLM's and the brokers' own metrics need those servers (tests/deploy checks
    # their names against what vLLM and kafka-exporter register); the platform's must all show.
    queries = [q for q in all_dashboard_queries() if not metric_names(q.expr) & EXTERNAL_METRICS]
    pending = {q.where: grafana_to_promql(q.expr, "2m") for q in queries}
    # Lag is refreshed every 5 s and the last events need a scrape: poll a little.
    deadline = time.monotonic() + 30
    while True:
        for where, expr in list(pending.items()):
            if has_value(await instant(prom, expr)):
                del pending[where]
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    answers = {where: await instant(prom, expr) for where, expr in pending.items()}
    assert answers == {}, "panels without data"

    # `or vector(0)` must not hide a missing metric: each one a panel names has series.
    named = set().union(*(metric_names(q.expr) for q in queries)) - FAULT_ONLY
    missing = [m for m in sorted(named) if not await instant(prom, f"count({m})")]
    assert missing == []


async def test_alert_rules_evaluate_cleanly(prom: httpx.AsyncClient) -> None:
    await asyncio.sleep(2)  # at least one evaluation after start-up
    groups = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(ALERTS.read_text())["groups"])
    assert [r["name"] for r in rules if r["health"] != "ok"] == []


async def test_keda_scales_every_consumer_group_the_services_use(
    prom: httpx.AsyncClient,
) -> None:
    running: dict[str, set[str]] = {}
    for series in await instant(prom, "count by (service, group) (cbd_consumer_lag)"):
        labels = series["metric"]
        running.setdefault(labels["service"], set()).add(labels["group"])
    scaled: dict[str, set[str]] = {}
    for doc in yaml.safe_load_all((DEPLOY / "k8s/base/scaling/keda.yaml").read_text()):
        if doc and doc["kind"] == "ScaledObject":
            name = doc["spec"]["scaleTargetRef"]["name"]
            scaled[name] = {t["metadata"]["consumerGroup"] for t in doc["spec"]["triggers"]}
    running.pop("ingest", None)  # the edge scales on CPU (scaling/ingest-hpa.yaml)
    assert scaled == running, "deploy/k8s/base/scaling/keda.yaml must list each consumer group"
