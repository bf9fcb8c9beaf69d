"""The edge loses no turn to a broker that lost its log (kill -9 of the in-memory broker).

A real ingest process on servers of its own (in-memory tansu, Redis, PostgreSQL): this test
plays the rest of the pipeline. A turn ingest accepted and published is on `turn.received`
when the broker is killed; the restarted broker has an empty log. Ingest notices (its next
record gets an offset it was given before) and publishes the turn again, same event id. A
turn nobody answers is published again after `CBD_INGEST_REPLAY_AFTER_S`; its reply settles
it, and the customer sees that reply once however often the turn and its reply were sent.
The replay rounds' bookkeeping (attempts, giving up, a broker still down) runs against the
same Redis with a clock the test moves.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from cbd.procs import tcp_open
from cbd.runtime import Platform
from services.ingest.replay import ABANDONED, REPLAYED, TurnReplay, pending_key
from shared.events import ReplyGenerated, ReplyGeneratedEvent, Role, TurnReceivedEvent
from shared.kafka import BrokerUnavailable, BrokerWatch, EventBus
from shared.settings import KafkaSettings
from shared.topics import Topic
from tests.kit import RecordingBus, turn_received

pytestmark = pytest.mark.integration

REPLAY_AFTER_S = 8


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Servers of their own (this test kills the broker) and one ingest process."""
    plat = Platform.for_tests(
        Path(tmp_path_factory.mktemp("replay")),
        extra_env={
            "CBD_INGEST_REPLAY_AFTER_S": str(REPLAY_AFTER_S),
            "CBD_INGEST_CUSTOMER_RATE_PER_MIN": "1000",
        },
    )
    plat.stack.with_llm = False
    plat.stack.start()
    try:
        plat.start_service("ingest")
        yield plat
    finally:
        plat.stop()


@pytest.fixture
async def redis(platform: Platform) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(platform.stack.env()["CBD_REDIS_URL"], decode_responses=True)
    yield client
    await client.aclose()


def kafka(platform: Platform) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=platform.stack.env()["CBD_KAFKA_BOOTSTRAP_SERVERS"])


async def received(platform: Platform, want: set[str], timeout_s: float = 30) -> list[str]:
    """Event ids on turn.received from the start of the log, once every id in `want` is."""
    settings = kafka(platform)
    topic = settings.topic(Topic.TURN_RECEIVED)
    # Subscribed (no group: every partition, from the first offset), so the client keeps
    # asking for a topic the restarted broker does not have yet.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        metadata_max_age_ms=500,
    )
    await consumer.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not want <= set(seen):
            assert time.monotonic() < deadline, f"{want - set(seen)} not on {topic}: {seen}"
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen += [json.loads(r.value)["event_id"] for r in records if r.value]
    finally:
        await consumer.stop()
    return seen


async def accept(http: httpx.AsyncClient, conversation_id: str, timeout_s: float = 30) -> Any:
    """POST a message until ingest accepts it (503 while the broker is away)."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = await http.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"customer_id": f"web-{conversation_id}", "text": "Where is my parcel?"},
        )
        if resp.status_code == 202:
            return resp.json()
        assert resp.status_code == 503, resp.text
        assert time.monotonic() < deadline, resp.text
        await asyncio.sleep(0.3)


async def metric(http: httpx.AsyncClient, line_start: str) -> float:
    text = (await http.get("/metrics")).text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(line_start))


async def test_a_turn_the_broker_lost_with_its_log_is_published_again(platform: Platform) -> None:
    conversation = f"replay-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=30) as http:
        first = await accept(http, conversation)
        await received(platform, {first["event_id"]})

        platform.kill_broker()
        assert platform.restart_exited() == ["kafka (tansu)"]
        deadline = time.monotonic() + 15
        while not tcp_open(platform.stack.ports.kafka):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

        # The customer writes again: its record lands on the emptied partition, at an
        # offset the broker had handed out before.
        second = await accept(http, conversation)
        # On the new log: the lost turn, the same event, published again, and the new one.
        on_new_log = await received(platform, {first["event_id"], second["event_id"]})
        assert on_new_log.count(first["event_id"]) >= 1
        assert await metric(http, "cbd_ingest_broker_log_losses_total") >= 1
        assert await metric(http, 'cbd_ingest_turns_replayed_total{reason="broker_log_lost"}') >= 1


async def test_an_unanswered_turn_is_replayed_then_settled_by_its_one_reply(
    platform: Platform, redis: aioredis.Redis
) -> None:
    conversation = f"slow-{uuid.uuid4().hex[:8]}"
    base = platform.url("ingest")
    ws_url = (
        base.replace("http://", "ws://")
        + f"/v1/conversations/{conversation}/ws?customer_id=web-{conversation}"
    )
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as http,
        websockets.connect(ws_url) as ws,
    ):
        turn = await accept(http, conversation)
        key = pending_key("cbd:", conversation, turn["turn_id"])
        assert await redis.exists(key)
        # Nobody answers: after REPLAY_AFTER_S the same event goes out again.
        seen = await received(platform, {turn["event_id"]}, timeout_s=10)
        deadline = time.monotonic() + REPLAY_AFTER_S + 20
        while seen.count(turn["event_id"]) < 2:
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(1.0)
            seen = await received(platform, {turn["event_id"]})
        assert await redis.hget(key, "attempts") == "1"

        # The pipeline answers, twice (its own replay's reply has the same ids).
        published = TurnReceivedEvent.model_validate_json(str(await redis.hget(key, "event")))
        reply = published.derive(
            ReplyGeneratedEvent,
            ReplyGenerated(
                turn_id=published.payload.message.turn_id,
                reply_id=uuid.uuid5(published.event_id, "reply"),
                author=Role.BOT,
                text="It is on its way.",
            ),
        )
        settings = kafka(platform)
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            for _ in range(2):
                await producer.send_and_wait(
                    settings.topic(Topic.REPLY_GENERATED),
                    reply.model_dump_json().encode(),
                    key=conversation.encode(),
                )
        finally:
            await producer.stop()

        replies: list[dict[str, Any]] = []
        settle_by = 0.0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not replies or time.monotonic() < settle_by):
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
            except TimeoutError:
                continue
            if frame.get("type") == "reply":
                replies.append(frame)
                settle_by = time.monotonic() + 2.0
        assert [r["turn_id"] for r in replies] == [turn["turn_id"]]
        assert not await redis.exists(key)
        assert await redis.zscore("cbd:pending-due", key) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_replay_rounds_count_attempts_give_up_and_wait_out_a_broker_outage(
    redis: aioredis.Redis,
) -> None:
    clock, bus = Clock(), RecordingBus()
    replay = TurnReplay(
        redis,
        cast(EventBus, bus),
        f"it-{uuid.uuid4().hex[:6]}:",
        after_s=60,
        attempts=2,
        clock=clock,
    )
    event = turn_received()
    await replay.accepted(event)
    key = pending_key(replay.prefix, event.conversation_id, event.payload.message.turn_id)

    assert await replay.replay_due() == 0
    clock.now += 60
    bus.fail_with = BrokerUnavailable("down")
    assert await replay.replay_due() == 0
    # Not counted as an attempt; due again soon rather than after another minute.
    assert await redis.hget(key, "attempts") == "0"
    assert await redis.zscore(replay.due_key, key) == clock.now + 2.0

    bus.fail_with = None
    clock.now += 2
    before = REPLAYED.labels("no_answer")._value.get()
    assert await replay.replay_due() == 1
    assert [e.event_id for e in bus.events(TurnReceivedEvent)] == [event.event_id]
    assert REPLAYED.labels("no_answer")._value.get() == before + 1
    clock.now += 60
    assert await replay.replay_due() == 1

    gave_up = ABANDONED._value.get()
    clock.now += 60
    assert await replay.replay_due() == 0
    assert ABANDONED._value.get() == gave_up + 1
    assert not await redis.exists(key)
    assert await redis.zcard(replay.due_key) == 0

    # A lost log replays every pending turn at once, whenever it is due.
    others = [turn_received() for _ in range(3)]
    for other in others:
        await replay.accepted(other)
    await replay.answered(others[0].conversation_id, others[0].payload.message.turn_id)
    replay.log_lost = True
    assert await replay.replay_due() == 2
    assert not replay.log_lost
    assert REPLAYED.labels("broker_log_lost")._value.get() >= 2
    # The broker lost them: no sign the turns cannot be answered, so no attempt is spent.
    assert (
        await redis.hget(
            pending_key(
                replay.prefix, others[1].conversation_id, others[1].payload.message.turn_id
            ),
            "attempts",
        )
        == "0"
    )

    # An outage the broker watch saw: once the broker is back, everything pending goes again.
    watch = SimpleNamespace(up=False, outages=0)
    replay.broker_watch = cast(BrokerWatch, watch)
    watch.outages += 1
    assert await replay.replay_due() == 0  # still down
    watch.up = True
    back = REPLAYED.labels("broker_back")._value.get()
    assert await replay.replay_due() == 2
    assert REPLAYED.labels("broker_back")._value.get() == back + 2
    assert await replay.replay_due() == 0
