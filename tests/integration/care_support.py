"""Events and stores for the care-loop tests: scripted turns, replies and a real bus."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from shared import db
from shared.events import (
    Channel,
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    Handoff,
    OpenIssue,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    RouteReason,
    RouteTarget,
    RoutingDecision,
    TurnRouted,
    TurnRoutedEvent,
)
from shared.kafka import EventBus, ensure_topics, make_broker
from shared.settings import KafkaSettings, PostgresSettings
from shared.topics import Topic

SERVICES = Path(__file__).resolve().parents[2] / "services"


async def care_pool(dsn: str) -> db.Pool:
    """A pool on `dsn` with memory's and audit's (care loop included) schemas migrated."""
    pool = await db.create_pool(PostgresSettings(dsn=SecretStr(dsn)))
    await db.migrate(pool, "memory", SERVICES / "memory" / "migrations")
    await db.migrate(pool, "audit", SERVICES / "audit" / "migrations")
    return pool


@asynccontextmanager
async def real_bus(kafka: KafkaSettings) -> AsyncIterator[EventBus]:
    """An EventBus publishing to the embedded broker under the test's topic prefix."""
    await ensure_topics(kafka)
    broker = make_broker(kafka, client_id="it-care")
    await broker.start()
    try:
        yield EventBus(broker, kafka, "it-care")
    finally:
        await broker.stop()


async def read_topic(
    kafka: KafkaSettings, topic: Topic, expect: int, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Every record on the topic's partition 0 from the start, waiting for `expect` of them
    (and a little longer, so an unexpected extra one is seen too)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, fetch_max_wait_ms=50)
    await consumer.start()
    tp = TopicPartition(kafka.topic(topic), 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    records: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < expect:
                batch = await consumer.getmany(timeout_ms=200)
                records.extend(json.loads(m.value) for msgs in batch.values() for m in msgs)
        batch = await consumer.getmany(timeout_ms=500)
        records.extend(json.loads(m.value) for msgs in batch.values() for m in msgs)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return records


def issue(
    category: str, conversation_id: str, opened: datetime, updated: datetime | None = None
) -> OpenIssue:
    """An open issue as memory's context lists it."""
    return OpenIssue(
        issue_id=uuid.uuid4(),
        category=category,
        summary=f"{category} problem",
        conversation_id=conversation_id,
        opened_at=opened,
        updated_at=updated or opened,
    )


def routed(
    conversation_id: str,
    customer_id: str,
    text: str,
    at: datetime,
    *,
    channel: Channel = Channel.WEB,
    issues: list[OpenIssue] | None = None,
    human: bool = False,
    new_ticket: bool = True,
) -> TurnRoutedEvent:
    """A turn.routed event as escalation publishes it."""
    scores = dict.fromkeys(EmotionLabel, 0.0)
    scores[EmotionLabel.FRUSTRATION] = 0.8
    handoff = (
        Handoff(
            ticket_id=uuid.uuid5(uuid.NAMESPACE_URL, conversation_id),
            new=new_ticket,
            owner="queued",
        )
        if human
        else None
    )
    return TurnRoutedEvent.create(
        conversation_id=conversation_id,
        customer_id=customer_id,
        channel=channel,
        payload=TurnRouted(
            message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=at),
            emotion=EmotionAnalysis(
                label=EmotionLabel.FRUSTRATION,
                scores=scores,
                sentiment=-0.5,
                intensity=0.7,
                model="test",
            ),
            context=ConversationContext(open_issues=issues or []),
            route=RoutingDecision(
                target=RouteTarget.HUMAN if human else RouteTarget.BOT,
                reasons=[RouteReason(code="test", detail="scripted")],
                policy="test",
                handoff=handoff,
            ),
        ),
    )


def reply(
    turn: TurnRoutedEvent,
    text: str,
    *,
    variant: str = "care",
    playbook: str | None = "delivery_delay",
    flags: list[str] | None = None,
    author: Role = Role.BOT,
    at: datetime | None = None,
) -> ReplyGeneratedEvent:
    """The bot's reply to `turn`."""
    event = turn.derive(
        ReplyGeneratedEvent,
        ReplyGenerated(
            turn_id=turn.payload.message.turn_id,
            reply_id=uuid.uuid4(),
            author=author,
            text=text,
            flags=flags or [],
            variant=variant,
            playbook=playbook,
            knowledge_used=["orders/late-or-missing-parcels"],
        ),
        part=str(uuid.uuid4()),
    )
    if at is not None:
        event = event.model_copy(update={"occurred_at": at})
    return event
