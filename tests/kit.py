"""The test kit: one recording bus, event factories, one way to wait, one way to serve an app.

- `RecordingBus`: stands in for `shared.kafka.EventBus` in fast unit tests; it records what
  was published and can be told to fail.
- `turn_received()` and the `analyzed`, `contextualized`, `routed`, `reply_generated` steps:
  events built the way the services build them, each derived from the one before through
  `Envelope.derive` (the same ids, trace and causation as the real chain).
- `eventually(probe)`: poll until the probe returns something truthy (or stops raising),
  then return it; on timeout, fail with the last value or error. Every e2e wait goes through it.
- `serving(*apps)`: run ASGI apps (lifespans included) on free ports in this event loop.
- `db_rows(dsn, query)`: a query's rows, for probes that watch PostgreSQL.
- `read_topic(kafka, topic, expect)`: what a one-partition topic holds, from the start.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.events import (
    AgentAssist,
    AssistSuggestedEvent,
    Channel,
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    Envelope,
    ReplyDeltaEvent,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    RouteReason,
    RouteTarget,
    RoutingDecision,
    Signal,
    TurnAnalyzed,
    TurnAnalyzedEvent,
    TurnContextualized,
    TurnContextualizedEvent,
    TurnReceived,
    TurnReceivedEvent,
    TurnRouted,
    TurnRoutedEvent,
    utcnow,
)
from shared.settings import KafkaSettings
from shared.topics import Topic

T = TypeVar("T")
E = TypeVar("E", bound=Envelope)

REPLY_WAIT_S = 150.0
"""The longest an end-to-end test waits for a bot reply. A wait ends when the reply comes;
the bound only has to exceed the platform's own worst case on a busy two-core runner: a turn
queued behind one or two others in generation, each given up to the 45 s first-token timeout
the shared platform sets before its fallback reply (tests/conftest.py)."""


class RecordingBus:
    """An `EventBus` stand-in that records each publish; `fail_with` makes the next ones raise."""

    def __init__(self) -> None:
        self.published: list[tuple[Topic, Envelope, bool]] = []
        """(topic, event, whether the publisher waited for the broker), in order."""
        self.fail_with: BaseException | None = None

    async def publish(self, event: Envelope, /, *, confirm: bool = True) -> None:
        """Record the event under its type's topic, as `EventBus.publish` would send it."""
        topic = Topic.for_event(event)
        if self.fail_with is not None:
            raise self.fail_with
        self.published.append((topic, event, confirm))

    def events(self, kind: type[E]) -> list[E]:
        """The published events of one type, in order."""
        return [e for _, e, _ in self.published if isinstance(e, kind)]

    def deltas(self) -> list[ReplyDeltaEvent]:
        """The published reply.delta events."""
        return self.events(ReplyDeltaEvent)

    def replies(self) -> list[ReplyGeneratedEvent]:
        """The published reply.generated events."""
        return self.events(ReplyGeneratedEvent)

    def assists(self) -> list[AssistSuggestedEvent]:
        """The published assist.suggested events."""
        return self.events(AssistSuggestedEvent)

    def analyzed(self) -> list[TurnAnalyzedEvent]:
        """The published turn.analyzed events."""
        return self.events(TurnAnalyzedEvent)

    def topics(self) -> list[Topic]:
        """The topics published to, in order."""
        return [t for t, _, _ in self.published]


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.2,
    what: str = "the condition",
) -> T:
    """Poll `probe` until it returns a truthy value without failing an assert; return it.

    On timeout the test fails, naming `what` and the probe's last answer or assertion.
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            result = await probe()
            if result:
                return result
            last = result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s}s; last: {last!r}")
        await asyncio.sleep(interval_s)


async def db_rows(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """One query's rows on a fresh connection (jsonb decoded), for polling with `eventually`."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def read_topic(
    kafka: KafkaSettings, topic: Topic, expect: int, timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    """Every record on a one-partition topic from the start, waiting up to `timeout_s` for
    `expect` of them (fewer come back if fewer are there)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, fetch_max_wait_ms=50)
    await consumer.start()
    partition = TopicPartition(kafka.topic(topic), 0)
    consumer.assign([partition])
    consumer.seek(partition, 0)
    records: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < expect:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    records.extend(json.loads(m.value) for m in messages)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return records


async def produce(bootstrap: str, topic: str, event: Envelope) -> None:
    """Put `event` on the physical `topic` as a producer outside the services would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, event.model_dump_json().encode(), key=event.conversation_id.encode()
        )
    finally:
        await producer.stop()


@asynccontextmanager
async def serving(*apps: Any, startup_timeout_s: float = 90.0) -> AsyncIterator[list[str]]:
    """Serve each app (lifespan included) on a free loopback port while the block runs.

    The apps start concurrently (a service's start-up mostly waits on its broker's group
    joins); yields their base URLs in order.
    """
    sockets, servers, tasks = [], [], []
    for app in apps:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        )
        sockets.append(sock)
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
    try:

        async def up() -> bool:
            return all(s.started or t.done() for s, t in zip(servers, tasks, strict=True))

        await eventually(up, timeout_s=startup_timeout_s, interval_s=0.05, what="the servers")
        for task in tasks:
            if task.done():
                task.result()
                raise AssertionError("a server stopped while starting")
        yield [f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        for sock in sockets:
            sock.close()


def turn_received(
    text: str = "Where is my order?",
    *,
    conversation_id: str | None = None,
    customer_id: str = "sam",
    channel: Channel = Channel.WEB,
) -> TurnReceivedEvent:
    """A customer's message as ingest publishes it."""
    return TurnReceivedEvent.create(
        conversation_id=conversation_id or f"conv-{uuid.uuid4().hex[:12]}",
        customer_id=customer_id,
        channel=channel,
        payload=TurnReceived(
            message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=utcnow())
        ),
    )


def analyzed(
    event: TurnReceivedEvent,
    *,
    label: EmotionLabel = EmotionLabel.NEUTRAL,
    intensity: float = 0.1,
    sentiment: float = 0.0,
    signals: list[Signal] | None = None,
) -> TurnAnalyzedEvent:
    """The turn with its emotion, as the emotion service derives it."""
    emotion = EmotionAnalysis(
        label=label,
        scores={label: 0.9},
        sentiment=sentiment,
        intensity=intensity,
        signals=signals or [],
        model="test-kit",
        confidence=0.9,
    )
    return event.derive(TurnAnalyzedEvent, TurnAnalyzed(**dict(event.payload), emotion=emotion))


def contextualized(
    event: TurnAnalyzedEvent, context: ConversationContext | None = None
) -> TurnContextualizedEvent:
    """The turn with its context, as memory derives it."""
    return event.derive(
        TurnContextualizedEvent,
        TurnContextualized(**dict(event.payload), context=context or ConversationContext()),
    )


def routed(
    event: TurnContextualizedEvent,
    target: RouteTarget = RouteTarget.BOT,
    reasons: list[RouteReason] | None = None,
) -> TurnRoutedEvent:
    """The turn with its route, as escalation derives it."""
    decision = RoutingDecision(target=target, reasons=reasons or [], policy="test")
    return event.derive(TurnRoutedEvent, TurnRouted(**dict(event.payload), route=decision))


def reply_generated(
    event: Envelope, text: str = "Happy to help.", *, author: Role = Role.BOT
) -> ReplyGeneratedEvent:
    """A complete reply to the turn `event` carries."""
    turn_id = getattr(getattr(event.payload, "message", None), "turn_id", None) or uuid.uuid4()
    return event.derive(
        ReplyGeneratedEvent,
        ReplyGenerated(turn_id=turn_id, reply_id=uuid.uuid4(), author=author, text=text),
    )


def assist_suggested(event: Envelope, suggestions: list[str] | None = None) -> AssistSuggestedEvent:
    """Agent assist for the turn `event` carries."""
    turn_id = getattr(getattr(event.payload, "message", None), "turn_id", None) or uuid.uuid4()
    return event.derive(
        AssistSuggestedEvent,
        AgentAssist(turn_id=turn_id, suggestions=suggestions or ["I am on it."]),
    )


async def stops_when_cancelled(check: Callable[[], Awaitable[Any]]) -> int:
    """Cancel a loop of `check` at many different moments; how many cancellations were lost."""

    async def forever() -> None:
        while True:
            await check()
            await asyncio.sleep(0.0005)

    lost = 0
    for i in range(60):
        task = asyncio.create_task(forever())
        for _ in range(i % 9):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.05)
        if not done:
            lost += 1
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.01)
    return lost
