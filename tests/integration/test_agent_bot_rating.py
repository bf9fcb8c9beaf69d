"""The agent rates the bot's part of a ticket, on real PostgreSQL, Redis and the broker.

Through the agent API: once per ticket, only by the agent holding it; the rating is stored
with the ticket and published as `feedback.received` (source `agent`). Read back from the
broker, audit counts it under the variant of the conversation's bot replies and the agent,
apart from customers' CSAT, and `cbd evaluate`'s loader reports it by variant.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from cbd.evaluate import load_agent_bot_ratings
from services.audit.care_settings import CareSettings
from services.audit.outcomes import Outcomes
from services.escalation.api import REFUSALS, agent_router
from services.escalation.auth import AgentAuth
from services.escalation.bot_rating import bot_rating_router
from services.escalation.desk import AgentSkills, Desk
from services.escalation.live import CONSOLE_CHANNEL, AgentHub, ConsoleFeed
from shared.events import FeedbackReceivedEvent, RouteTarget
from shared.fanout import Fanout
from shared.http import install, provide
from shared.kafka import EventBus
from shared.settings import KafkaSettings
from shared.topics import Topic
from tests.integration.care_support import care_pool, read_topic, real_bus, reply, routed
from tests.integration.test_desk import decision, turn_event

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_agent_rates_the_bots_part_once_and_audit_counts_it_by_variant(
    desk: Desk,
    fresh_db: str,
    isolated_kafka: KafkaSettings,
) -> None:
    conv = f"conv-{uuid.uuid4().hex[:8]}"
    event = turn_event(conv, "let me talk to a person")
    decided = await desk.route(event, lambda _: decision(RouteTarget.HUMAN))
    assert decided.handoff is not None
    ticket = decided.handoff.ticket_id
    agents = AgentAuth({"anna": "pw-anna", "bo": "pw-bo"}, secrets.token_urlsafe(32))
    app = FastAPI()
    install(app, max_body_bytes=64 * 1024, refusals=REFUSALS)
    app.include_router(agent_router())
    app.include_router(bot_rating_router())
    fanout = Fanout(desk.redis, desk.prefix, channel=CONSOLE_CHANNEL, receiver=AgentHub())
    for value in (agents, desk, AgentSkills({}), ConsoleFeed(fanout)):
        provide(app, value)
    anna = {"Authorization": f"Bearer {agents.issue('anna')}"}
    bo = {"Authorization": f"Bearer {agents.issue('bo')}"}
    url = f"/v1/agent/tickets/{ticket}/bot-rating"
    body = {"rating": 2, "comment": "  It kept repeating the tracking link.  "}
    async with (
        real_bus(isolated_kafka) as bus,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as http,
    ):
        provide(app, bus, as_=EventBus)
        assert (await http.get(url, headers=anna)).json()["error"] == "not_rated"
        unclaimed = await http.post(url, json=body, headers=anna)
        assert (await http.post(f"/v1/agent/tickets/{ticket}/claim", headers=anna)).is_success
        not_holder = await http.post(url, json=body, headers=bo)
        invalid = [
            (await http.post(url, json=bad, headers=anna)).status_code
            for bad in ({"rating": 0}, {"rating": "4"}, {"rating": 4, "extra": 1}, {})
        ]
        rated = await http.post(url, json=body, headers=anna)
        again = await http.post(url, json={"rating": 5}, headers=anna)
        read = await http.get(url, headers=bo)
        records = await read_topic(isolated_kafka, Topic.FEEDBACK_RECEIVED, expect=1)

    assert unclaimed.status_code == 409
    assert not_holder.status_code == 409
    assert invalid == [422, 422, 422, 422]
    assert rated.status_code == 201, rated.text
    assert rated.json()["rating"] == 2
    assert rated.json()["comment"] == "It kept repeating the tracking link."
    assert again.status_code == 409
    assert again.json()["error"] == "already_rated"
    assert read.json() == rated.json()
    assert len(records) == 1  # refused ratings published nothing
    feedback = FeedbackReceivedEvent.model_validate(records[0])
    assert str(feedback.event_id) == rated.json()["event_id"]
    assert feedback.conversation_id == conv
    assert feedback.payload.source == "agent"
    assert feedback.payload.agent_id == "anna"
    assert feedback.payload.ticket_id == ticket
    assert feedback.payload.rating == 2

    # Audit: under the variant of the bot's replies and the rating agent, not as CSAT.
    pool = await care_pool(fresh_db)
    try:
        outcomes = Outcomes(pool, None, CareSettings(review_sample_share=0.0))
        at = feedback.occurred_at - timedelta(minutes=5)
        turn = routed(conv, feedback.customer_id, "where is my parcel", at)
        playbook = f"pb-{conv}"
        bot_reply = reply(
            turn, "Here is your tracking link.", variant="baseline", playbook=playbook
        )
        await outcomes.on_turn_routed(turn)
        await outcomes.on_reply_generated(bot_reply)
        labels = {"variant": "baseline", "channel": "web", "playbook": playbook}
        await outcomes.on_feedback_received(feedback)
        await outcomes.on_feedback_received(feedback)  # redelivered: counted once
        row = await pool.fetchrow(
            "SELECT source, agent_id, ticket_id, rating FROM care.feedback WHERE event_id = $1",
            feedback.event_id,
        )
        queued = await pool.fetchval(
            "SELECT reasons FROM care.review_items WHERE reply_id = $1",
            bot_reply.payload.reply_id,
        )
        by_variant = await load_agent_bot_ratings(fresh_db)
    finally:
        await pool.close()
    assert sample("cbd_care_agent_bot_ratings_total", rating="2", agent="anna", **labels) == 1
    assert sample("cbd_care_csat_ratings_total", rating="2", agent="anna", **labels) == 0
    assert sample("cbd_care_csat_ratings_total", rating="2", agent="none", **labels) == 0
    assert row is not None
    assert dict(row) == {"source": "agent", "agent_id": "anna", "ticket_id": ticket, "rating": 2}
    assert queued == ["agent_low"]
    assert by_variant["baseline"].n == 1
    assert by_variant["baseline"].mean == 2.0
