"""The customer ends the chat, on the real Redis, broker and PostgreSQL.

The intake publishes `conversation.closed` (reason `ended`) to the embedded broker; the
record read back from the topic is what audit's outcomes count: a contained, resolved close.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.audit.care_settings import CareSettings
from services.audit.outcomes import Outcomes
from services.ingest.edge import EdgeGuard
from services.ingest.intake import Intake
from services.ingest.ownership import Owners, Party
from services.ingest.settings import IngestSettings
from shared import db
from shared.events import Channel, CloseReason, ConversationClosedEvent
from shared.http import ApiError
from shared.settings import KafkaSettings, RedisSettings
from shared.topics import Topic
from tests.integration.care_support import care_pool, read_topic, real_bus, reply, routed

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pool = await care_pool(fresh_db)
    yield pool
    await pool.close()


async def test_an_ended_chat_is_closed_once_and_counted_as_contained(
    redis_client: aioredis.Redis, isolated_kafka: KafkaSettings, pool: db.Pool
) -> None:
    settings = IngestSettings(redis=RedisSettings(key_prefix=f"it-{secrets.token_hex(4)}:"))
    guard = EdgeGuard(settings, redis_client)
    owners = Owners(redis_client, settings.redis.key_prefix, settings.owner_ttl_s)
    conv, customer = f"conv-{secrets.token_hex(6)}", f"web-{secrets.token_hex(6)}"
    party = Party("demo", customer)
    async with real_bus(isolated_kafka) as bus:
        intake = Intake(settings, bus, redis_client, guard, owners)
        accepted = await intake.message(conv, party, Channel.WEB, "Where is my parcel?")
        ended = await intake.end(conv, party, Channel.WEB)
        again = await intake.end(conv, party, Channel.WEB)  # another tab
        with pytest.raises(ApiError) as refused:
            await intake.message(conv, party, Channel.WEB, "hello again")
        with pytest.raises(ApiError) as foreign:
            await intake.end(conv, Party("demo", "web-someone-else"), Channel.WEB)
    assert again.duplicate
    assert again.event_id == ended.event_id
    assert refused.value.status == 409
    assert foreign.value.status == 404

    records = await read_topic(isolated_kafka, Topic.CONVERSATION_CLOSED, expect=1)
    assert len(records) == 1
    closed = ConversationClosedEvent.model_validate(records[0])
    assert str(closed.event_id) == ended.event_id
    assert closed.payload.reason is CloseReason.ENDED
    assert (closed.conversation_id, closed.customer_id) == (conv, customer)

    # Audit folds it like any close: contained (no ticket) and a resolution candidate.
    outcomes = Outcomes(pool, None, CareSettings(review_sample_share=0.0))
    turn = routed(conv, customer, "Where is my parcel?", closed.occurred_at - timedelta(seconds=5))
    playbook = f"pb-{conv}"
    await outcomes.on_turn_routed(turn)
    await outcomes.on_reply_generated(reply(turn, "Let me check.", playbook=playbook))
    labels = {"variant": "care", "channel": "web", "playbook": playbook, "agent": "none"}
    await outcomes.on_conversation_closed(closed)
    row = await pool.fetchrow("SELECT * FROM care.conversations WHERE conversation_id = $1", conv)
    assert row is not None
    assert row["close_reason"] == "ended"
    assert row["escalated"] is False
    assert row["fcr_candidate"] is True
    value = REGISTRY.get_sample_value(
        "cbd_conversations_closed_total", {**labels, "reason": "ended", "contained": "true"}
    )
    assert value == 1
    assert accepted.turn_id
