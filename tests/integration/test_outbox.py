"""The transactional outbox on real PostgreSQL, Redis and broker.

Erasure: the DELETE commits with its `customer.erased` event; with the broker unreachable it
still succeeds, a retried DELETE answers the same, and the relay publishes the event later,
once. Ownership: a change of owner commits with its Redis mirror message; with Redis failing
the mirror is written later by the relay, and never behind a later epoch.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka.errors import KafkaConnectionError
from fastapi import FastAPI

from services.escalation.desk import OWNERSHIP, Desk
from services.memory.api import customer_router
from services.memory.customers import CustomerStore
from services.memory.erasure import Eraser
from shared import db, ownership
from shared.embedding import MiniLmEmbedder
from shared.events import CustomerErasedEvent, RouteReason, RouteTarget, RoutingDecision
from shared.http import install, provide
from shared.kafka import EventBus, ensure_topics, make_broker
from shared.outbox import EVENT, Deliver, Message, Outbox, publishing
from shared.settings import KafkaSettings
from shared.topics import Topic
from tests.kit import analyzed, contextualized, read_topic, turn_received

pytestmark = pytest.mark.integration

TOKEN = "outbox-admin"


class Outage:
    """Wraps a deliverer; while `down`, deliveries fail as they do when the server is gone."""

    def __init__(self, deliver: Deliver, error: Exception) -> None:
        self.deliver = deliver
        self.error = error
        self.down = True
        self.attempts = 0

    async def __call__(self, message: Message) -> None:
        self.attempts += 1
        if self.down:
            raise self.error
        await self.deliver(message)


@pytest.fixture
async def bus(isolated_kafka: KafkaSettings) -> AsyncIterator[EventBus]:
    await ensure_topics(isolated_kafka, (Topic.CUSTOMER_ERASED,))
    broker = make_broker(isolated_kafka, client_id="it-outbox")
    await broker.start()
    try:
        yield EventBus(broker, isolated_kafka, "memory")
    finally:
        await broker.stop()


async def test_erasure_commits_with_its_event_which_the_relay_publishes_after_an_outage(
    memory_pool: db.Pool,
    redis_client: aioredis.Redis,
    bus: EventBus,
    isolated_kafka: KafkaSettings,
) -> None:
    store = CustomerStore(
        memory_pool, redis_client, MiniLmEmbedder(), key_prefix=f"it-{uuid.uuid4().hex[:6]}:"
    )
    customer = f"sam-{uuid.uuid4().hex[:6]}"
    await store.resolve(customer)
    await store.link(customer, f"phone:4477{uuid.uuid4().int % 10**8:08d}")
    outage = Outage(
        publishing(bus, CustomerErasedEvent), KafkaConnectionError("broker unreachable")
    )
    outbox = Outbox(memory_pool, "memory", {EVENT: outage}, service="memory")
    app = FastAPI()
    install(app, max_body_bytes=64 * 1024)
    app.include_router(customer_router(TOKEN))
    provide(app, store)
    provide(app, Eraser(store, outbox))
    auth = {"authorization": f"Bearer {TOKEN}"}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://memory"
    ) as http:
        first = await http.delete(f"/v1/customers/{customer}", headers=auth)
        assert first.status_code == 200, first.text
        assert first.json()["identities"] == 2
        # The broker was down: the erasure stands, its event waits in the outbox.
        assert outage.attempts == 1
        assert await outbox.pending() == 1
        assert (await http.get(f"/v1/customers/{customer}", headers=auth)).status_code == 404

        again = await http.delete(f"/v1/customers/{customer}", headers=auth)
        assert (again.status_code, again.json()) == (200, first.json())
        unknown = await http.delete("/v1/customers/never-seen-here", headers=auth)
        assert unknown.status_code == 404

    # Still down: the relay keeps the event and notes why.
    assert await outbox.relay_once(older_than_s=0) == 0
    row = await memory_pool.fetchrow("SELECT attempts, last_error FROM memory.outbox")
    assert row is not None
    assert row["attempts"] == 1
    assert "broker unreachable" in row["last_error"]

    outage.down = False
    assert await outbox.relay_once(older_than_s=0) == 1
    assert await outbox.pending() == 0
    assert await outbox.relay_once(older_than_s=0) == 0

    records = await read_topic(isolated_kafka, Topic.CUSTOMER_ERASED, expect=2, timeout_s=5)
    erasures = [r for r in records if r["event_id"] == first.json()["erasure_event_id"]]
    assert len(erasures) == 1, records
    assert erasures[0]["payload"]["erased_customer_id"] == customer
    assert len(erasures[0]["payload"]["identities"]) == 2


async def test_an_immediate_publish_leaves_nothing_for_the_relay(
    memory_pool: db.Pool,
    redis_client: aioredis.Redis,
    bus: EventBus,
    isolated_kafka: KafkaSettings,
) -> None:
    store = CustomerStore(
        memory_pool, redis_client, MiniLmEmbedder(), key_prefix=f"it-{uuid.uuid4().hex[:6]}:"
    )
    outbox = Outbox(
        memory_pool, "memory", {EVENT: publishing(bus, CustomerErasedEvent)}, service="memory"
    )
    customer = f"kim-{uuid.uuid4().hex[:6]}"
    await store.resolve(customer)
    receipt = await Eraser(store, outbox).erase(customer, "test")
    assert receipt is not None
    assert await outbox.pending() == 0
    records = await read_topic(isolated_kafka, Topic.CUSTOMER_ERASED, expect=1)
    assert [r["event_id"] for r in records] == [str(receipt.erasure_event_id)]


def to_a_person(_: Any) -> RoutingDecision:
    return RoutingDecision(
        target=RouteTarget.HUMAN,
        reasons=[RouteReason(code="explicit_request", detail="test")],
        policy="test",
    )


async def test_an_ownership_move_is_mirrored_by_the_relay_after_redis_failed(desk: Desk) -> None:
    outage = Outage(desk.outbox.deliverers[OWNERSHIP], ConnectionError("redis unreachable"))
    desk.outbox.deliverers[OWNERSHIP] = outage
    turn = contextualized(analyzed(turn_received("a person please")))

    decision = await desk.route(turn, to_a_person)
    assert decision.handoff is not None
    assert decision.epoch == 1
    # The move committed; its mirror did not reach Redis and waits in the outbox.
    assert await desk.owner(turn.conversation_id) is None
    assert await desk.outbox.pending() == 1

    outage.down = False
    assert await desk.outbox.relay_once(older_than_s=0) == 1
    assert await desk.owner(turn.conversation_id) == ownership.Ownership(owner="queued", epoch=1)

    claimed = await desk.claim(decision.handoff.ticket_id, "agent")
    assert claimed.status == "claimed"
    assert await desk.owner(turn.conversation_id) == ownership.Ownership(owner="agent", epoch=2)
    assert await desk.outbox.pending() == 0


async def test_the_mirror_never_moves_back_to_an_earlier_epoch(
    redis_client: aioredis.Redis,
) -> None:
    prefix, conversation = f"it-{uuid.uuid4().hex[:6]}:", "conv-epochs"
    later = ownership.Ownership(owner="agent", epoch=3)
    assert await ownership.write(redis_client, prefix, conversation, later)
    stale = ownership.Ownership(owner="queued", epoch=2)
    assert not await ownership.write(redis_client, prefix, conversation, stale)
    assert await ownership.read(redis_client, prefix, conversation) == later
