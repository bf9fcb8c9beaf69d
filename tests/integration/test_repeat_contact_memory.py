"""Repeat contact across conversations and loops by meaning, through memory's real handler
(PostgreSQL with pgvector, Redis, the MiniLM embedder) and the shipped escalation policy."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from services.emotion.analyzer import EmotionAnalyzer
from services.escalation.policy import DEFAULT_POLICY_PATH, decide, load_policy
from services.memory.context import ContextAssembler
from services.memory.customers import CustomerStore
from services.memory.extraction import RuleExtractor
from services.memory.handlers import MemoryHandlers
from services.memory.turns import TurnStore, meaning_key
from shared import db
from shared.embedding import MiniLmEmbedder
from shared.events import (
    Channel,
    CustomerMessage,
    Envelope,
    RouteTarget,
    TurnAnalyzed,
    TurnAnalyzedEvent,
    TurnContextualized,
    TurnContextualizedEvent,
    utcnow,
)
from shared.kafka import EventBus

pytestmark = pytest.mark.integration


class _Captured:
    """Stands in for the bus's publish only: what is under test is memory's side."""

    def __init__(self) -> None:
        self.events: list[Envelope] = []

    async def publish(self, event: Envelope, /, **_: Any) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


@pytest.fixture
def parts(
    memory_pool: db.Pool, redis_client: aioredis.Redis, embedder: MiniLmEmbedder
) -> tuple[MemoryHandlers, _Captured, TurnStore]:
    prefix = f"rc-{uuid.uuid4().hex[:6]}:"
    bus = _Captured()
    turns = TurnStore(memory_pool, redis_client, key_prefix=prefix, keep=12, ttl_s=600)
    customers = CustomerStore(memory_pool, redis_client, embedder, key_prefix=prefix)
    handlers = MemoryHandlers(
        cast(EventBus, bus),
        turns,
        customers,
        ContextAssembler(memory_pool),
        embedder,
        RuleExtractor(embedder),
        keep=12,
    )
    return handlers, bus, turns


async def _say(
    handlers: MemoryHandlers,
    bus: _Captured,
    analyzer: EmotionAnalyzer,
    customer: str,
    conversation: str,
    text: str,
    *,
    days_ago: float = 0,
) -> TurnContextualized:
    at = utcnow() - timedelta(days=days_ago)
    event = TurnAnalyzedEvent.create(
        conversation_id=conversation,
        customer_id=customer,
        channel=Channel.SMS,
        payload=TurnAnalyzed(
            message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=at),
            emotion=analyzer.analyze(text),
        ),
    )
    await handlers.on_turn_analyzed(event)
    published = bus.events[-1]
    assert isinstance(published, TurnContextualizedEvent)
    return published.payload


async def test_a_repair_no_show_is_carried_into_a_later_conversation_and_chasing_it_escalates(
    parts: tuple[MemoryHandlers, _Captured, TurnStore], analyzer: EmotionAnalyzer
) -> None:
    handlers, bus, _ = parts
    policy = load_policy(DEFAULT_POLICY_PATH)
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    first = await _say(
        handlers,
        bus,
        analyzer,
        customer,
        "conv-web",
        "My washing machine repair was supposed to happen today but no technician came",
        days_ago=1,
    )
    later = await _say(handlers, bus, analyzer, customer, "conv-sms", "Hi, any news?")

    assert [i.category for i in first.context.open_issues] == ["repair"]
    (issue,) = later.context.open_issues
    assert issue.category == "repair"
    assert issue.conversation_id == "conv-web"
    assert "washing machine" in issue.summary
    decision = decide(later, policy, conversation_id="conv-sms")
    assert decision.target is RouteTarget.HUMAN
    assert "repeat_contact" in [r.code for r in decision.reasons]


async def test_rephrased_questions_are_compared_by_meaning_from_cached_embeddings(
    parts: tuple[MemoryHandlers, _Captured, TurnStore],
    analyzer: EmotionAnalyzer,
    redis_client: aioredis.Redis,
) -> None:
    handlers, bus, turns = parts
    policy = load_policy(DEFAULT_POLICY_PATH)
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    texts = [
        "Where's my order?",
        "I still haven't received my order, where is it?",
        "Can you tell me where my order is?",
    ]
    seen = [await _say(handlers, bus, analyzer, customer, "conv-loop", t) for t in texts]

    assert seen[0].context.recent_turns == []
    (earlier,) = seen[1].context.recent_turns
    assert earlier.similarity is not None
    similar = [t.similarity for t in seen[2].context.recent_turns]
    assert len(similar) == 2
    assert all(s is not None and s >= 0.52 for s in similar), similar
    decision = decide(seen[2], policy, conversation_id="conv-loop")
    assert "customer_loop" in [r.code for r in decision.reasons]
    assert len(await turns.meanings("conv-loop")) == 3
    assert await redis_client.exists(meaning_key(turns.key_prefix, "default", "conv-loop"))
