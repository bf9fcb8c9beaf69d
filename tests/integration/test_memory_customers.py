"""The customer model against real PostgreSQL (pgvector) and Redis, with the real embedder."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from services.memory.context import ContextAssembler, ContextLimits
from services.memory.customers import CustomerStore, TurnFacts
from services.memory.extraction import RuleExtractor
from shared import db
from shared.embedding import MiniLmEmbedder
from shared.events import EmotionAnalysis, EmotionLabel, HistoryTurn, Role, utcnow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def extractor(embedder: MiniLmEmbedder) -> RuleExtractor:
    return RuleExtractor(embedder)


@pytest.fixture
def prefix() -> str:
    return f"it-{uuid.uuid4().hex[:6]}:"


@pytest.fixture
def store(
    memory_pool: db.Pool, redis_client: aioredis.Redis, embedder: MiniLmEmbedder, prefix: str
) -> CustomerStore:
    return CustomerStore(memory_pool, redis_client, embedder, key_prefix=prefix)


def emotion(label: EmotionLabel = EmotionLabel.NEUTRAL, sentiment: float = 0.0) -> EmotionAnalysis:
    return EmotionAnalysis(
        label=label, scores={label: 1.0}, sentiment=sentiment, intensity=0.5, model="test"
    )


async def say(
    store: CustomerStore,
    extractor: RuleExtractor,
    customer: str,
    conversation: str,
    text: str,
    *,
    mood: EmotionAnalysis | None = None,
    days_ago: int = 0,
) -> list[uuid.UUID]:
    """What the memory handler does with one customer message."""
    facts = TurnFacts(
        customer_id=customer,
        conversation_id=conversation,
        turn_id=uuid.uuid4(),
        at=utcnow() - timedelta(days=days_ago),
        emotion=mood or emotion(),
    )
    await store.pg.execute(
        "INSERT INTO memory.conversations (conversation_id, customer_id, channel, started_at, "
        "last_activity_at) VALUES ($1, $2, 'web', $3, $3) ON CONFLICT DO NOTHING",
        conversation,
        customer,
        facts.at,
    )
    await store.fold_mood(facts)
    vector = store.embedder.embed([text])[0]
    found = extractor.extract(text, sentiment=facts.emotion.sentiment, vector=vector)
    return await store.learn(facts, found)


async def memories(store: CustomerStore, customer: str) -> dict[str, str]:
    rows = await store.pg.fetch(
        "SELECT slot, text FROM memory.memories WHERE customer_id = $1", customer
    )
    return {r["slot"]: r["text"] for r in rows}


async def test_a_new_value_for_a_slot_replaces_the_old_one(
    store: CustomerStore, extractor: RuleExtractor
) -> None:
    customer = await store.resolve(f"cust-{uuid.uuid4().hex[:8]}")
    await say(store, extractor, customer, "c1", "My address is 4 Elm Street, York.")
    await say(store, extractor, customer, "c1", "I love eco-friendly stuff")
    await say(store, extractor, customer, "c2", "I've moved! My new address is 9 Quay Road, Hull")
    await say(store, extractor, customer, "c2", "I prefer eco friendly products")
    known = await memories(store, customer)
    assert known["contact:address"] == "Address: 9 Quay Road, Hull"
    assert sum(1 for s in known if s.startswith("contact:address")) == 1
    eco = [t for t in known.values() if "eco" in t.lower()]
    assert eco == ["Prefers eco friendly products"], known


async def test_issues_update_instead_of_duplicating_and_close_when_resolved(
    store: CustomerStore, extractor: RuleExtractor
) -> None:
    customer = await store.resolve(f"cust-{uuid.uuid4().hex[:8]}")
    angry = emotion(EmotionLabel.ANGER, -0.8)
    await say(store, extractor, customer, "c1", "My parcel never arrived!", mood=angry)
    await say(store, extractor, customer, "c2", "Where is my parcel?? Still missing", mood=angry)
    rows = await store.pg.fetch(
        "SELECT category, status, summary FROM memory.issues WHERE customer_id = $1", customer
    )
    assert [(r["category"], r["status"]) for r in rows] == [("delivery_lost", "open")]
    assert rows[0]["summary"] == "Where is my parcel??", "raised again: the newer words win"
    await say(store, extractor, customer, "c3", "Good news, it finally arrived this morning")
    status = await store.pg.fetchval(
        "SELECT status FROM memory.issues WHERE customer_id = $1", customer
    )
    assert status == "resolved"


async def test_linking_a_phone_merges_what_it_said_into_the_known_customer(
    store: CustomerStore, extractor: RuleExtractor, redis_client: aioredis.Redis
) -> None:
    known = f"cust-{uuid.uuid4().hex[:8]}"
    phone = f"phone:44770090{uuid.uuid4().int % 10000:04d}"
    assert await store.resolve(known) == known
    assert await store.resolve(phone) == phone, "an unknown number starts as its own customer"
    await say(store, extractor, phone, "sms-1", "Please call me Sam. I'm vegetarian.")
    assert await store.link(known, phone) == phone
    assert await store.resolve(phone) == known
    assert set(await memories(store, known)) == {"profile:preferred_name", "fact:diet"}
    assert await store.pg.fetchval(
        "SELECT preferred_name FROM memory.customers WHERE customer_id = $1", known
    ) in {None, "Sam"}
    assert not await store.pg.fetchval(
        "SELECT count(*) FROM memory.customers WHERE customer_id = $1", phone
    )
    # Redis lost: resolution still works from PostgreSQL, only slower.
    await redis_client.delete(f"{store.key_prefix}mem:identity:{phone}")
    assert await store.resolve(phone) == known


async def test_context_recalls_the_relevant_memory_within_budget(
    store: CustomerStore, extractor: RuleExtractor, memory_pool: db.Pool
) -> None:
    customer = await store.resolve(f"cust-{uuid.uuid4().hex[:8]}")
    for text in (
        "I prefer eco-friendly products",
        "Please email me, don't call",
        "My daughter's birthday is on the 12th",
        "I'm allergic to peanuts",
        "I work nights",
        "I have two dogs",
        "My new address is 1 Mill Lane, Bath",
    ):
        await say(store, extractor, customer, "old", text, days_ago=3)
    await say(
        store,
        extractor,
        customer,
        "old",
        "I was charged twice and I'm fed up",
        mood=emotion(EmotionLabel.FRUSTRATION, -0.7),
        days_ago=3,
    )
    assembler = ContextAssembler(memory_pool, ContextLimits(token_budget=700))
    query = "Could you suggest a reusable water bottle?"
    rows = await assembler.fetch(customer, "new", store.embedder.embed([query])[0])
    recent = [HistoryTurn(role=Role.CUSTOMER, text="hello " * 40, at=utcnow())] * 30
    context = assembler.build(rows, recent=recent, source="cache", now=utcnow())
    texts = [m.text for m in context.memories]
    assert "Prefers eco-friendly products" in texts[:3], texts
    assert context.memories_used == [str(m.memory_id) for m in context.memories]
    assert [i.category for i in context.open_issues] == ["billing"]
    assert "3 days ago" in context.emotional_history
    assert "frustration" in context.emotional_history
    assert context.profile is not None
    assert context.profile.conversations == 1
    assert context.token_estimate <= 700
    assert 0 < len(context.recent_turns) < 30, "the budget must cut the oldest turns"

    small = ContextAssembler(memory_pool, ContextLimits(token_budget=60)).build(
        rows, recent=recent, source="cache", now=utcnow()
    )
    assert small.token_estimate <= 60
    assert not small.recent_turns


async def test_withdrawn_consent_stops_recall(store: CustomerStore, memory_pool: db.Pool) -> None:
    customer = await store.resolve(f"cust-{uuid.uuid4().hex[:8]}")
    await say(store, RuleExtractor(), customer, "c", "I prefer eco-friendly products")
    await store.update_profile(customer, {"consent": {"personalisation": False}, "tier": "gold"})
    assert not await store.personalisation_allowed(customer)
    assembler = ContextAssembler(memory_pool)
    rows = await assembler.fetch(
        customer, "c2", store.embedder.embed(["any ideas?"])[0], recall=False
    )
    context = assembler.build(rows, recent=[], source="empty", now=utcnow())
    assert context.memories == []
    assert context.customer_tier == "gold"


async def test_erase_leaves_nothing_in_memory_tables_or_keys(
    store: CustomerStore,
    extractor: RuleExtractor,
    redis_client: aioredis.Redis,
    prefix: str,
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    phone = f"phone:44770091{uuid.uuid4().int % 10000:04d}"
    await store.resolve(customer)
    await store.link(customer, phone)
    await say(store, extractor, customer, "erase-c1", "Call me Robin. My parcel is lost.")
    await redis_client.set(f"{prefix}conv:erase-c1:turns", "x")
    identities, conversations = await store.erase(customer) or ([], [])
    assert set(identities) == {customer, phone}
    assert conversations == ["erase-c1"]
    tables = await store.pg.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'memory'"
    )
    for t in tables:
        hits = await store.pg.fetchval(
            f'SELECT count(*) FROM memory."{t["table_name"]}" x '  # noqa: S608 (catalog names)
            "WHERE x::text LIKE '%' || $1 || '%' OR x::text LIKE '%Robin%'",
            customer,
        )
        assert hits == 0, t["table_name"]
    assert await redis_client.keys(f"{prefix}*") == []
    assert await store.erase(customer) is None
