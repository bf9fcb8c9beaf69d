"""Records about a customer that arrive after their erasure keep nothing, in every store.

Each test erases first and then delivers, through the handler the service subscribes, what was
still in flight: a reply, a turn, a rating, a close. On the code before erasure receipts each
of these re-created the customer's content (CI's fresh-clone e2e scan once found a reply in
audit.events, care.replies and care.conversations written after the erasure). Everything runs
on the real PostgreSQL (and Redis) the test setup starts.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import cast

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.audit.care_settings import CareSettings
from services.audit.handlers import AuditHandlers
from services.audit.ledger import Ledger, Record
from services.audit.outcomes import Outcomes
from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.handlers import EmotionHandlers
from services.emotion.trajectory import TrajectoryStore
from services.escalation.desk import Desk
from services.escalation.handlers import EscalationHandlers
from services.escalation.live import AgentHub, ConsoleFeed
from services.escalation.policy import PolicyStore
from services.ingest.delivery import ConnectionHub, conversation_fanout
from services.ingest.handlers import IngestHandlers
from services.memory.context import ContextAssembler
from services.memory.customers import CustomerStore
from services.memory.extraction import RuleExtractor
from services.memory.handlers import MemoryHandlers
from services.memory.turns import TurnStore, conversation_key
from shared import db
from shared.embedding import MiniLmEmbedder
from shared.erasure import Subject
from shared.events import (
    Channel,
    CloseReason,
    ConversationClosed,
    ConversationClosedEvent,
    ConversationContext,
    CustomerErased,
    CustomerErasedEvent,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    Envelope,
    Feedback,
    FeedbackReceivedEvent,
    ReplyDelta,
    ReplyDeltaEvent,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    TurnAnalyzed,
    TurnAnalyzedEvent,
    TurnContextualized,
    TurnContextualizedEvent,
    TurnReceived,
    TurnReceivedEvent,
    utcnow,
)
from shared.fanout import Fanout
from shared.kafka import EventBus
from tests.integration.care_support import care_pool, reply, routed
from tests.kit import RecordingBus, reply_generated

pytestmark = pytest.mark.integration

SECRET = "my card ends 4242 and I live at 7 Elm Street"


def late_count(store: str) -> float:
    return REGISTRY.get_sample_value("cbd_erasure_late_records_total", {"store": store}) or 0.0


def ids() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"cust-{tag}", f"conv-{tag}", f"conv-new-{tag}"


def erasure(customer: str, conversations: list[str], at: datetime) -> CustomerErasedEvent:
    return CustomerErasedEvent.create(
        conversation_id=f"erasure-{uuid.uuid4().hex}",
        customer_id=customer,
        channel=Channel.API,
        payload=CustomerErased(
            erased_customer_id=customer,
            identities=[customer],
            conversation_ids=conversations,
            requested_by="test",
            requested_at=at,
        ),
    )


def emotion() -> EmotionAnalysis:
    return EmotionAnalysis(
        label=EmotionLabel.FRUSTRATION,
        scores={EmotionLabel.FRUSTRATION: 1.0},
        sentiment=-0.6,
        intensity=0.6,
        model="test",
    )


def body(event: Envelope) -> bytes:
    return event.model_dump_json().encode()


def closed(conversation: str, customer: str, at: datetime) -> ConversationClosedEvent:
    event = ConversationClosedEvent.create(
        conversation_id=conversation,
        customer_id=customer,
        channel=Channel.WEB,
        payload=ConversationClosed(reason=CloseReason.ENDED),
    )
    return event.model_copy(update={"occurred_at": at})


# ---- audit: the ledger ----------------------------------------------------------------------


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pool = await care_pool(fresh_db)
    yield pool
    await pool.close()


async def test_the_ledger_stores_late_records_erased_and_its_chain_still_verifies(
    pool: db.Pool,
) -> None:
    ledger = Ledger(pool, "late-records-key")
    handlers = AuditHandlers(ledger)
    customer, conv, new_conv = ids()
    now = utcnow()
    before, after = now - timedelta(minutes=1), now + timedelta(minutes=1)
    turn = routed(conv, customer, SECRET, before)
    late_reply = reply(turn, f"Sorry about that. {SECRET}", at=now + timedelta(seconds=1))
    # A conversation erasure could not know of (it had not reached memory yet), and what
    # followed in it after the erasure.
    unseen = routed(new_conv, customer, SECRET, before)
    its_close = closed(new_conv, customer, after)
    # The customer coming back afterwards, in a new conversation: a new relationship, kept.
    back = routed(f"back-{conv}", customer, "hello again", after)
    offsets = iter(range(100))

    def record(event: Envelope) -> Record:
        return Record(f"{event.event_type}", 0, next(offsets), body(event))

    base = late_count("audit.events")
    # One fetched batch: what came before the erasure in it is erased with it, what came
    # after is appended after the erasure ran (the batch path), then one by one.
    await handlers.on_records(
        [record(routed(conv, customer, SECRET, before)), record(erasure(customer, [conv], now))]
        + [record(e) for e in (late_reply, unseen)]
    )
    await handlers.on_any_event(record(its_close))
    await handlers.on_any_event(record(back))

    rows = await pool.fetch("SELECT * FROM audit.events ORDER BY seq")
    assert len(rows) == 6
    for row in rows[:5]:
        assert row["erased_at"] is not None, row["event_type"]
        assert bytes(row["body"]) == b""
        assert row["payload"] is None
        assert row["customer_id"] is None
        assert row["conversation_id"] is None
    assert rows[5]["customer_id"] == customer  # the returning customer's new conversation
    assert late_count("audit.events") - base == 3
    everything = b"".join(bytes(r["body"]) for r in rows)
    assert SECRET.encode() not in everything
    verdict = await ledger.check()
    assert verdict.intact, verdict.describe()
    assert verdict.checked == 6

    # A redelivered erasure changes nothing and a redelivered late record is no new row.
    again = erasure(customer, [conv], now)
    await handlers.on_any_event(Record("customer.erased", 0, 99, body(again)))
    await handlers.on_any_event(Record("reply.generated", 0, 2, body(late_reply)))
    assert await pool.fetchval("SELECT count(*) FROM audit.events") == 7
    assert (await ledger.check()).intact


# ---- audit: the care loop -------------------------------------------------------------------


async def test_the_care_tables_drop_what_arrives_after_the_erasure(pool: db.Pool) -> None:
    outcomes = Outcomes(pool, None, CareSettings(review_sample_share=1.0))
    customer, conv, new_conv = ids()
    now = utcnow()
    before = now - timedelta(minutes=1)
    await outcomes.on_customer_erased(erasure(customer, [conv], now))
    # Redelivered: harmless.
    await outcomes.on_customer_erased(erasure(customer, [conv], now))

    turn = routed(conv, customer, SECRET, before, human=True)
    rating = FeedbackReceivedEvent.create(
        conversation_id=conv,
        customer_id=customer,
        channel=Channel.WEB,
        payload=Feedback(rating=1, comment=SECRET),
    )
    unseen = routed(new_conv, customer, SECRET, before)
    stores = ["care.turns", "care.replies", "care.feedback", "care.conversations"]
    base = {s: late_count(s) for s in stores}
    await outcomes.on_turn_routed(turn)
    await outcomes.on_reply_generated(reply(turn, f"Sorry. {SECRET}", flags=["needs_human"]))
    await outcomes.on_feedback_received(rating)
    await outcomes.on_conversation_closed(closed(conv, customer, now + timedelta(hours=1)))
    await outcomes.on_turn_routed(unseen)
    # Closed after the erasure, in a conversation only a late record revealed: late too.
    await outcomes.on_conversation_closed(closed(new_conv, customer, now + timedelta(hours=1)))

    for table in ("conversations", "turns", "replies", "feedback", "review_items"):
        left = await pool.fetchval(f"SELECT count(*) FROM care.{table}")  # noqa: S608
        assert left == 0, table
    counted = {s: late_count(s) - base[s] for s in stores}
    assert counted == {
        "care.turns": 2,
        "care.replies": 1,
        "care.feedback": 1,
        "care.conversations": 2,
    }

    # The customer writing again after the erasure is kept: receipts stop the past only.
    back = routed(f"back-{conv}", customer, "hello again", now + timedelta(minutes=1))
    await outcomes.on_turn_routed(back)
    assert await pool.fetchval("SELECT count(*) FROM care.turns") == 1


# ---- escalation -----------------------------------------------------------------------------


def contextualized(conversation: str, customer: str, at: datetime) -> TurnContextualizedEvent:
    message = CustomerMessage(
        turn_id=uuid.uuid4(), text=f"I want to speak to a human. {SECRET}", received_at=at
    )
    return TurnContextualizedEvent.create(
        conversation_id=conversation,
        customer_id=customer,
        channel=Channel.WEB,
        payload=TurnContextualized(
            message=message, emotion=emotion(), context=ConversationContext()
        ),
    )


async def test_escalation_opens_no_ticket_for_a_turn_or_reply_after_the_erasure(
    desk: Desk,
) -> None:
    bus = RecordingBus()
    fanout = Fanout(desk.redis, desk.prefix, channel="console", receiver=AgentHub())
    handlers = EscalationHandlers(cast(EventBus, bus), PolicyStore(), desk, ConsoleFeed(fanout))
    customer, conv, new_conv = ids()
    now = utcnow()
    await handlers.on_customer_erased(erasure(customer, [conv], now))
    await handlers.on_customer_erased(erasure(customer, [conv], now))

    base = late_count("escalation.tickets")
    turn = contextualized(conv, customer, now - timedelta(seconds=30))
    await handlers.on_turn_contextualized(turn)
    await handlers.on_turn_contextualized(contextualized(new_conv, customer, now))
    flagged = turn.derive(
        ReplyGeneratedEvent,
        ReplyGenerated(
            turn_id=turn.payload.message.turn_id,
            reply_id=uuid.uuid4(),
            author=Role.BOT,
            text=SECRET,
            flags=["needs_human"],
        ),
    )
    await handlers.on_reply_generated(flagged)

    assert bus.published == []  # nobody answers a turn of an erased customer
    for table in ("tickets", "conversations", "outbox"):
        left = await desk.pg.fetchval(f"SELECT count(*) FROM escalation.{table}")  # noqa: S608
        assert left == 0, table
    assert late_count("escalation.tickets") - base == 3

    # Coming back later is a new conversation like any other.
    await handlers.on_turn_contextualized(
        contextualized(f"back-{conv}", customer, now + timedelta(minutes=1))
    )
    assert len(bus.published) == 1


# ---- memory ---------------------------------------------------------------------------------


async def test_a_late_turn_or_reply_does_not_bring_the_customer_back_into_memory(
    memory_pool: db.Pool, redis_client: aioredis.Redis, embedder: MiniLmEmbedder
) -> None:
    prefix = f"it-{uuid.uuid4().hex[:6]}:"
    store = CustomerStore(memory_pool, redis_client, embedder, key_prefix=prefix)
    turns = TurnStore(memory_pool, redis_client, key_prefix=prefix, keep=6, ttl_s=60)
    bus = RecordingBus()
    handlers = MemoryHandlers(
        cast(EventBus, bus),
        turns,
        store,
        ContextAssembler(memory_pool),
        embedder,
        RuleExtractor(embedder),
        keep=6,
    )
    customer, conv, new_conv = ids()

    def turn(conversation: str, text: str, at: datetime) -> TurnAnalyzedEvent:
        return TurnAnalyzedEvent.create(
            conversation_id=conversation,
            customer_id=customer,
            channel=Channel.WEB,
            payload=TurnAnalyzed(
                message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=at),
                emotion=emotion(),
            ),
        )

    first = turn(conv, "Please call me Sam. I was charged twice for my order.", utcnow())
    await handlers.on_turn_analyzed(first)
    in_flight = turn(conv, f"Call me Samantha. {SECRET}", utcnow())
    unseen = turn(new_conv, f"I prefer eco-friendly products. {SECRET}", utcnow())
    assert await store.erase(customer) is not None
    await store.erase(customer)  # a retried erasure is harmless

    base = {s: late_count(s) for s in ("memory.customers", "memory.turns")}
    await handlers.on_turn_analyzed(in_flight)
    await handlers.on_turn_analyzed(unseen)
    await handlers.on_reply_generated(
        first.derive(
            ReplyGeneratedEvent,
            ReplyGenerated(
                turn_id=first.payload.message.turn_id,
                reply_id=uuid.uuid4(),
                author=Role.BOT,
                text=f"Thanks Sam. {SECRET}",
                turn_received_at=first.payload.message.received_at,
            ),
        )
    )
    await store.record_crm(customer, tier="gold", lifetime_value=10.0, purchase_summary="3 orders")

    for table in ("customers", "identities", "turns", "memories", "issues", "conversations"):
        left = await memory_pool.fetchval(f"SELECT count(*) FROM memory.{table}")  # noqa: S608
        assert left == 0, table
    for conversation in (conv, new_conv):
        cached = await redis_client.lrange(conversation_key(prefix, "default", conversation), 0, -1)
        assert not any(SECRET in json.dumps(c) for c in cached)
    assert len(bus.published) == 1  # the first turn's context, nothing after the erasure
    # Two turns whose identity resolved to nobody, and the CRM's facts; the bot's reply.
    assert late_count("memory.customers") - base["memory.customers"] == 3
    assert late_count("memory.turns") - base["memory.turns"] == 1

    # The customer writing again after the erasure starts afresh.
    later = utcnow() + timedelta(minutes=1)
    await handlers.on_turn_analyzed(turn(f"back-{conv}", "Hello again", later))
    assert await store.export(customer) is not None


# ---- emotion and ingest (Redis) -------------------------------------------------------------


async def test_emotion_keeps_no_mood_and_ingest_buffers_no_reply_after_the_erasure(
    redis_client: aioredis.Redis,
) -> None:
    prefix = f"it-{uuid.uuid4().hex[:6]}:"
    customer, conv, new_conv = ids()
    now = utcnow()
    before, later = now - timedelta(seconds=30), now + timedelta(minutes=1)

    def received(conversation: str, at: datetime) -> TurnReceivedEvent:
        return TurnReceivedEvent.create(
            conversation_id=conversation,
            customer_id=customer,
            channel=Channel.WEB,
            payload=TurnReceived(
                message=CustomerMessage(turn_id=uuid.uuid4(), text=SECRET, received_at=at)
            ),
        )

    moods = TrajectoryStore(redis_client, key_prefix=prefix, ttl_s=60)
    emotion_handlers = EmotionHandlers(cast(EventBus, RecordingBus()), EmotionAnalyzer(), moods)
    ingest = IngestHandlers(conversation_fanout(redis_client, prefix, ConnectionHub()), prefix)
    erased = erasure(customer, [conv], now)
    for _ in range(2):  # a redelivered erasure is harmless
        await emotion_handlers.on_customer_erased(erased)
        await ingest.on_customer_erased(erased)

    base = {s: late_count(s) for s in ("emotion.trajectories", "ingest.frames")}
    in_flight = received(conv, before)
    await emotion_handlers.on_turn_received(in_flight)
    # A conversation the erasure did not know of: its turn marks it erased, so a reply in it
    # is stopped too, whenever it comes.
    await emotion_handlers.on_turn_received(received(new_conv, before))
    answer = reply_generated(in_flight, SECRET)
    await ingest.on_reply_generated(answer)
    await ingest.on_reply_delta(
        in_flight.derive(
            ReplyDeltaEvent,
            ReplyDelta(
                turn_id=answer.payload.turn_id, reply_id=answer.payload.reply_id, seq=0, text=SECRET
            ),
        )
    )

    for conversation in (conv, new_conv):
        assert not await redis_client.exists(f"{prefix}emotion:{conversation}")
        assert not await redis_client.exists(f"{prefix}frames:{conversation}")
    assert late_count("emotion.trajectories") - base["emotion.trajectories"] == 2
    assert late_count("ingest.frames") - base["ingest.frames"] == 2
    leaked = [
        key
        async for key in redis_client.scan_iter(match=f"{prefix}*")
        if customer in key or conv in key
    ]
    assert leaked == []

    # The customer writing again later is served and remembered as anyone new.
    back = received(f"back-{conv}", later)
    await emotion_handlers.on_turn_received(back)
    assert await redis_client.exists(f"{prefix}emotion:back-{conv}")
    hello = reply_generated(back, "Hello!")
    payload = hello.payload.model_copy(update={"turn_received_at": later})
    await ingest.on_reply_generated(hello.model_copy(update={"payload": payload}))
    assert await redis_client.exists(f"{prefix}frames:back-{conv}")


# ---- no window ------------------------------------------------------------------------------


async def test_a_write_in_progress_when_the_erasure_starts_is_erased_with_the_rest(
    pool: db.Pool,
) -> None:
    """The erasure waits for a checked write already past its check, then deletes it too."""
    outcomes = Outcomes(pool, None, CareSettings())
    customer, conv, _ = ids()
    turn = routed(conv, customer, SECRET, utcnow() - timedelta(seconds=30))
    async with pool.acquire() as conn:
        writing = conn.transaction()
        await writing.start()
        # Past the check (nothing erased yet) and not committed: a handler mid-transaction.
        assert not await outcomes.receipts.check(conn, Subject.of(turn), "care.turns")
        erasing = asyncio.create_task(outcomes.on_customer_erased(erasure(customer, [], utcnow())))
        await asyncio.sleep(0.5)
        assert not erasing.done(), "the erasure must wait for the write it could miss"
        await conn.execute(
            "INSERT INTO care.turns (turn_id, conversation_id, customer_id, message, emotion, at) "
            "VALUES ($1, $2, $3, $4, '{}'::jsonb, now())",
            uuid.uuid4(),
            conv,
            customer,
            SECRET,
        )
        await writing.commit()
    await erasing
    assert await pool.fetchval("SELECT count(*) FROM care.turns") == 0
    # And a write that checks after the erasure committed sees its receipt.
    async with pool.acquire() as conn, conn.transaction():
        assert await outcomes.receipts.check(conn, Subject.of(turn), "care.turns")
