"""A customer who answers the instant a reply appears: memory's real handler (PostgreSQL,
Redis, the MiniLM embedder) waits for the reply the turn names before reading the context."""

from __future__ import annotations

import asyncio
import uuid
from typing import cast

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.memory.context import ContextAssembler
from services.memory.customers import CustomerStore
from services.memory.extraction import RuleExtractor
from services.memory.handlers import MemoryHandlers
from services.memory.turns import TurnStore
from shared import db
from shared.embedding import MiniLmEmbedder
from shared.events import (
    Channel,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    TurnAnalyzed,
    TurnAnalyzedEvent,
    TurnContextualizedEvent,
    utcnow,
)
from shared.kafka import EventBus
from tests.kit import RecordingBus

pytestmark = pytest.mark.integration


def _handlers(
    pool: db.Pool, redis: aioredis.Redis, embedder: MiniLmEmbedder, wait_s: float
) -> tuple[MemoryHandlers, RecordingBus]:
    prefix = f"rw-{uuid.uuid4().hex[:6]}:"
    bus = RecordingBus()
    handlers = MemoryHandlers(
        cast(EventBus, bus),
        TurnStore(pool, redis, key_prefix=prefix, keep=12, ttl_s=600),
        CustomerStore(pool, redis, embedder, key_prefix=prefix),
        ContextAssembler(pool),
        embedder,
        RuleExtractor(embedder),
        keep=12,
        reply_wait_s=wait_s,
    )
    return handlers, bus


def _turn(
    conversation: str, customer: str, text: str, after: uuid.UUID | None
) -> TurnAnalyzedEvent:
    return TurnAnalyzedEvent.create(
        conversation_id=conversation,
        customer_id=customer,
        channel=Channel.WEB,
        payload=TurnAnalyzed(
            message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=utcnow()),
            emotion=EmotionAnalysis(
                label=EmotionLabel.NEUTRAL,
                scores={EmotionLabel.NEUTRAL: 1.0},
                sentiment=0.0,
                intensity=0.0,
                model="test",
            ),
            after_reply_id=after,
        ),
    )


def _reply(first: TurnAnalyzedEvent, reply_id: uuid.UUID, text: str) -> ReplyGeneratedEvent:
    return ReplyGeneratedEvent.create(
        conversation_id=first.conversation_id,
        customer_id=first.customer_id,
        channel=Channel.WEB,
        payload=ReplyGenerated(
            turn_id=first.payload.message.turn_id, reply_id=reply_id, author=Role.BOT, text=text
        ),
    )


def _recent(bus: RecordingBus) -> list[tuple[str, str]]:
    published = bus.events(TurnContextualizedEvent)[-1]
    return [(t.role.value, t.text) for t in published.payload.context.recent_turns]


def _count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("cbd_memory_reply_waits_total", {"outcome": outcome})
    return value or 0.0


async def test_a_turn_waits_for_the_reply_its_customer_saw(
    memory_pool: db.Pool, redis_client: aioredis.Redis, embedder: MiniLmEmbedder
) -> None:
    handlers, bus = _handlers(memory_pool, redis_client, embedder, wait_s=5.0)
    conversation, customer = f"conv-{uuid.uuid4().hex[:8]}", f"cust-{uuid.uuid4().hex[:8]}"
    first = _turn(conversation, customer, "Where is my parcel?", None)
    await handlers.on_turn_analyzed(first)
    reply_id = uuid.uuid4()
    reply = _reply(first, reply_id, "It left our depot this morning.")
    second = _turn(conversation, customer, "Thanks, when will it arrive?", reply_id)
    waited = _count("waited")

    async def reply_lands_late() -> None:
        # The reply topic's consumer is behind: the turn is handled first.
        await asyncio.sleep(0.3)
        await handlers.on_reply_generated(reply)

    late = asyncio.create_task(reply_lands_late())
    await handlers.on_turn_analyzed(second)
    await late
    assert _recent(bus) == [
        ("customer", "Where is my parcel?"),
        ("bot", "It left our depot this morning."),
    ]
    assert _count("waited") == waited + 1


async def test_a_reply_that_never_comes_holds_the_turn_only_for_the_wait(
    memory_pool: db.Pool, redis_client: aioredis.Redis, embedder: MiniLmEmbedder
) -> None:
    handlers, bus = _handlers(memory_pool, redis_client, embedder, wait_s=0.2)
    conversation, customer = f"conv-{uuid.uuid4().hex[:8]}", f"cust-{uuid.uuid4().hex[:8]}"
    timeouts = _count("timeout")
    await handlers.on_turn_analyzed(_turn(conversation, customer, "Hello?", uuid.uuid4()))
    assert _recent(bus) == []
    assert _count("timeout") == timeouts + 1
