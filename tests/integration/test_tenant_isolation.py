"""Two tenants that both have a customer "user-1" share nothing, on real PostgreSQL and Redis.

A turn goes through memory's real handler (the one the service subscribes), so what is checked
is what generation would receive: the context published for the other tenant's "user-1".
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from services.escalation.api import say as agent_says
from services.escalation.desk import Desk
from services.escalation.packet import build_packet
from services.memory.api import customer_router
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
    ReplyGeneratedEvent,
    Role,
    RouteReason,
    RouteTarget,
    RoutingDecision,
    TurnAnalyzed,
    TurnAnalyzedEvent,
    TurnContextualizedEvent,
    utcnow,
)
from shared.http import install, provide
from shared.kafka import EventBus
from tests.kit import RecordingBus

pytestmark = pytest.mark.integration

ESCALATION_MIGRATIONS = Path(__file__).resolve().parents[2] / "services/escalation/migrations"

ADMIN = "admin-token-for-tenant-tests"
CUSTOMER = "user-1"
PHONE = "phone:447700900123"


@pytest.fixture
def store(
    memory_pool: db.Pool, redis_client: aioredis.Redis, embedder: MiniLmEmbedder
) -> CustomerStore:
    return CustomerStore(
        memory_pool, redis_client, embedder, key_prefix=f"it-{uuid.uuid4().hex[:6]}:"
    )


def _emotion() -> EmotionAnalysis:
    return EmotionAnalysis(
        label=EmotionLabel.FRUSTRATION,
        scores={EmotionLabel.FRUSTRATION: 1.0},
        sentiment=-0.6,
        intensity=0.6,
        model="test",
    )


def handlers_for(
    store: CustomerStore, embedder: MiniLmEmbedder, bus: RecordingBus
) -> MemoryHandlers:
    turns = TurnStore(store.pg, store.redis, key_prefix=store.key_prefix, keep=6, ttl_s=60)
    return MemoryHandlers(
        cast(EventBus, bus),
        turns,
        store,
        ContextAssembler(store.pg),
        embedder,
        RuleExtractor(embedder),
        keep=6,
    )


async def say(
    handlers: MemoryHandlers, bus: RecordingBus, tenant: str, conversation: str, text: str
) -> TurnContextualizedEvent:
    """One customer message of `CUSTOMER` in `tenant`; the turn memory publishes for it."""
    event = TurnAnalyzedEvent.create(
        conversation_id=conversation,
        customer_id=CUSTOMER,
        channel=Channel.WEB,
        tenant=tenant,
        payload=TurnAnalyzed(
            message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=utcnow()),
            emotion=_emotion(),
        ),
    )
    await handlers.on_turn_analyzed(event)
    published = bus.published[-1][1]
    assert isinstance(published, TurnContextualizedEvent)
    assert published.tenant == tenant
    return published


async def test_the_same_customer_id_in_two_tenants_is_two_people(
    store: CustomerStore, embedder: MiniLmEmbedder
) -> None:
    bus = RecordingBus()
    handlers = handlers_for(store, embedder, bus)
    suffix = uuid.uuid4().hex[:6]
    await say(
        handlers,
        bus,
        "acme",
        f"acme-1-{suffix}",
        "Please call me Sam. I prefer eco-friendly products. I was charged twice for my order.",
    )

    # globex's user-1 writes for the first time: nothing of acme's user-1 may reach its turn.
    other = await say(handlers, bus, "globex", f"globex-1-{suffix}", "Hello, any news?")
    context = other.payload.context
    assert context.memories == []
    assert context.open_issues == []
    assert context.recent_turns == []
    assert context.emotional_history == ""
    assert context.profile is not None
    assert context.profile.preferred_name is None

    # acme's user-1 still has everything, in a new conversation.
    again = await say(handlers, bus, "acme", f"acme-2-{suffix}", "Hello again.")
    remembered = again.payload.context
    assert remembered.profile is not None
    assert remembered.profile.preferred_name == "Sam"
    assert "Prefers eco-friendly products" in [m.text for m in remembered.memories]
    assert "billing" in [i.category for i in remembered.open_issues]

    # The record agrees: each tenant's export holds only its own turns.
    acme = await store.export(CUSTOMER, tenant="acme")
    globex = await store.export(CUSTOMER, tenant="globex")
    assert acme is not None
    assert globex is not None
    assert {t["text"] for t in globex["turns"]} == {"Hello, any news?"}
    assert "Hello, any news?" not in {t["text"] for t in acme["turns"]}
    assert globex["memories"] == []
    assert globex["issues"] == []

    # Erasing globex's user-1 leaves acme's user-1 whole.
    assert await store.erase(CUSTOMER, tenant="globex") is not None
    assert await store.export(CUSTOMER, tenant="globex") is None
    kept = await store.export(CUSTOMER, tenant="acme")
    assert kept is not None
    assert len(kept["memories"]) == len(acme["memories"]) > 0


async def test_a_phone_number_two_tenants_know_is_two_customers(store: CustomerStore) -> None:
    await store.link(CUSTOMER, PHONE, tenant="acme")
    assert await store.resolve(PHONE, tenant="acme") == CUSTOMER
    # The cache is warm for acme; globex still gets a customer of its own.
    assert await store.resolve(PHONE, tenant="globex") == PHONE
    await store.link("g-7", PHONE, tenant="globex")
    assert await store.resolve(PHONE, tenant="globex") == "g-7"
    # globex linking the number merged globex's phone customer, never acme's user-1.
    assert await store.resolve(PHONE, tenant="acme") == CUSTOMER
    acme = await store.export(CUSTOMER, tenant="acme")
    assert acme is not None
    assert [i["identity"] for i in acme["identities"]] == [PHONE]
    assert await store.export("g-7", tenant="acme") is None


async def test_the_admin_api_answers_within_the_tenant_it_is_asked_for(
    store: CustomerStore,
) -> None:
    await store.update_profile(CUSTOMER, {"name": "Sam Jones", "tier": "gold"}, tenant="acme")
    app = FastAPI()
    install(app, max_body_bytes=64 * 1024)
    app.include_router(customer_router(ADMIN))
    provide(app, store)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://memory") as http:
        acme = await http.get(f"/v1/customers/{CUSTOMER}?tenant=acme", headers=headers)
        assert acme.status_code == 200
        assert acme.json()["name"] == "Sam Jones"
        for url in (f"/v1/customers/{CUSTOMER}?tenant=globex", f"/v1/customers/{CUSTOMER}"):
            other = await http.get(url, headers=headers)
            assert other.status_code == 404, url
        patched = await http.patch(
            f"/v1/customers/{CUSTOMER}?tenant=globex", json={"tier": "bronze"}, headers=headers
        )
        assert patched.status_code == 200
        assert patched.json()["name"] is None
    profile = await store.export(CUSTOMER, tenant="acme")
    assert profile is not None
    assert profile["profile"]["tier"] == "gold"


async def test_an_agent_sees_only_the_ticket_tenants_customer(
    store: CustomerStore, embedder: MiniLmEmbedder
) -> None:
    pool = store.pg
    await db.migrate(pool, "escalation", ESCALATION_MIGRATIONS)
    bus = RecordingBus()
    handlers = handlers_for(store, embedder, bus)
    suffix = uuid.uuid4().hex[:6]
    await store.update_profile(CUSTOMER, {"name": "Acme Sam"}, tenant="acme")
    await say(handlers, bus, "acme", f"acme-{suffix}", "I prefer eco-friendly products.")
    await store.update_profile(CUSTOMER, {"name": "Globex Kim"}, tenant="globex")
    turn = await say(handlers, bus, "globex", f"globex-{suffix}", "I want to talk to a person.")

    desk = Desk(pool, store.redis, key_prefix=store.key_prefix, handle_minutes=4, agents_on_shift=2)
    opened = await desk.route(
        turn,
        lambda _: RoutingDecision(
            target=RouteTarget.HUMAN,
            reasons=[RouteReason(code="explicit_request", detail="test")],
            policy="test",
        ),
    )
    assert opened.handoff is not None
    ticket = await desk.get(opened.handoff.ticket_id, tenants=["globex"])
    assert ticket.tenant == "globex"

    packet = await build_packet(pool, ticket)
    assert packet["customer"]["profile"]["Name"] == "Globex Kim"
    assert "Prefers eco-friendly products" not in str(packet)
    assert [t["text"] for t in packet["transcript"]] == ["I want to talk to a person."]

    # The agent's reply goes out in the customer's tenant (ingest delivers only to owners).
    await agent_says(cast(EventBus, bus), ticket, Role.AGENT, "Hi Kim, I'm here.", [])
    reply = bus.published[-1][1]
    assert isinstance(reply, ReplyGeneratedEvent)
    assert reply.tenant == "globex"

    # Erasing acme's user-1 leaves globex's ticket alone.
    assert await desk.erase([CUSTOMER], [], tenant="acme") == 0
    assert (await desk.get(ticket.ticket_id, tenants=["globex"])).tenant == "globex"
