"""Migrations, memory's turn store and the audit ledger against real PostgreSQL and Redis."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from services.audit.ledger import Ledger, Record
from services.memory.turns import StoredTurn, TurnStore
from shared import db
from shared.events import Channel, CustomerMessage, Role, TurnReceived, TurnReceivedEvent, utcnow
from shared.settings import PostgresSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MEMORY_MIGRATIONS = ROOT / "services" / "memory" / "migrations"
AUDIT_MIGRATIONS = ROOT / "services" / "audit" / "migrations"
AUDIT_KEY = "integration-test-audit-chain-key-0123456789"


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    p = await db.create_pool(PostgresSettings(dsn=SecretStr(fresh_db)))
    yield p
    await p.close()


async def test_migrations_apply_once_and_refuse_edited_history(
    pool: db.Pool, tmp_path: Path
) -> None:
    assert await db.migrate(pool, "memory", MEMORY_MIGRATIONS) == [
        "001_turns",
        "002_customer_model",
        "003_memory_provenance",
        "003_outbox",
        "004_tenant_scope",
        "005_crm_sync",
        "006_erasure_receipts",
    ]
    assert await db.migrate(pool, "memory", MEMORY_MIGRATIONS) == []
    edited = tmp_path / "migrations"
    shutil.copytree(MEMORY_MIGRATIONS, edited)
    first = edited / "001_turns.sql"
    first.write_text(first.read_text() + "\n-- edited after release\n")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        await db.migrate(pool, "memory", edited)


def event(conversation_id: str) -> TurnReceivedEvent:
    return TurnReceivedEvent.create(
        conversation_id=conversation_id,
        customer_id="cust-store",
        channel=Channel.WEB,
        payload=TurnReceived(
            message=CustomerMessage(turn_id=uuid.uuid4(), text="hi", received_at=utcnow())
        ),
    )


async def test_turn_store_dedupes_and_rebuilds_context_after_redis_loses_it(
    pool: db.Pool, redis_client: aioredis.Redis
) -> None:
    await db.migrate(pool, "memory", MEMORY_MIGRATIONS)
    prefix = f"it-{uuid.uuid4().hex[:6]}:"
    store = TurnStore(pool, redis_client, key_prefix=prefix, keep=2, ttl_s=60)
    conversation_id = f"conv-{uuid.uuid4().hex[:8]}"
    ev = event(conversation_id)
    start = utcnow()
    turns = [
        StoredTurn(uuid.uuid4(), Role.CUSTOMER, "one", start),
        StoredTurn(uuid.uuid4(), Role.BOT, "two", start + timedelta(seconds=1)),
        StoredTurn(uuid.uuid4(), Role.CUSTOMER, "three", start + timedelta(seconds=2)),
        StoredTurn(uuid.uuid4(), Role.BOT, "four", start + timedelta(seconds=3)),
    ]
    for t in turns:
        assert await store.record(ev, t) is True
    assert await store.record(ev, turns[0]) is False, "a redelivered turn must not be stored twice"

    cached, source = await store.recent(conversation_id)
    assert source == "cache"
    assert [t.text for t in cached][-2:] == ["three", "four"]

    await redis_client.delete(f"{prefix}conv:{conversation_id}:turns")
    rebuilt, source = await store.recent(conversation_id)
    assert source == "database"
    assert [t.text for t in rebuilt][-2:] == ["three", "four"]
    assert [t.role for t in rebuilt][-2:] == [Role.CUSTOMER, Role.BOT]
    _, source = await store.recent(conversation_id)
    assert source == "cache"

    empty, source = await store.recent("conv-never-seen")
    assert (empty, source) == ([], "empty")


async def test_audit_ledger_is_append_only_and_detects_tampering(
    pool: db.Pool, fresh_db: str
) -> None:
    await db.migrate(pool, "audit", AUDIT_MIGRATIONS)
    ledger = Ledger(pool, AUDIT_KEY)
    records = [
        Record("turn.received", 0, 0, b'{"event_id": "x", "conversation_id": "c1"}'),
        Record("turn.received", 0, 1, b"\x00\x01 not json"),
        Record("reply.generated", 2, 7, b'["an", "array"]'),
        Record("turn.received", 1, 3, b'{"text": "nul \\u0000 inside"}'),
        Record("turn.received", 1, 4, b"[" * 3000 + b"]" * 3000),
    ]
    for r in records:
        assert await ledger.append(r) is True
    assert await ledger.append(records[0]) is False
    assert await ledger.verify() == (True, 5)

    conn = await asyncpg.connect(fresh_db)
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE audit.events SET conversation_id = 'c2'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM audit.events")
        # Someone with superuser rights goes around the guard: the chain still tells.
        await conn.execute("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
        await conn.execute("UPDATE audit.events SET body = 'forged' WHERE kafka_offset = 1")
    finally:
        await conn.close()
    intact, checked = await ledger.verify()
    assert intact is False
    assert checked == 1


async def test_audit_erasure_removes_content_and_keeps_the_chain(
    pool: db.Pool, fresh_db: str
) -> None:
    await db.migrate(pool, "audit", AUDIT_MIGRATIONS)
    ledger = Ledger(pool, AUDIT_KEY)
    sam = b'{"event_id": "a", "conversation_id": "conv-sam", "customer_id": "sam", "t": "hi"}'
    kim = b'{"event_id": "b", "conversation_id": "conv-kim", "customer_id": "kim", "t": "yo"}'
    dead = b'{"dead_letter_id": "d", "key": "conv-sam", "payload": "raw text from sam"}'
    for offset, body in enumerate((sam, kim, dead)):
        assert await ledger.append(Record("turn.received", 0, offset, body))

    assert await ledger.erase(["sam"], ["conv-sam"]) == 2
    assert await ledger.erase(["sam"], ["conv-sam"]) == 0, "erasing twice changes nothing"
    assert await ledger.verify() == (True, 3)
    rows = await pool.fetch("SELECT body, payload, erased_at FROM audit.events ORDER BY seq")
    assert [bytes(r["body"]) for r in rows] == [b"", kim, b""]
    assert [r["erased_at"] is not None for r in rows] == [True, False, True]
    assert not await pool.fetchval("SELECT count(*) FROM audit.events e WHERE e::text LIKE '%sam%'")

    conn = await asyncpg.connect(fresh_db)
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            # Looks like an erasure but rewrites the hash: refused.
            await conn.execute(
                "UPDATE audit.events SET body = '', payload = NULL, conversation_id = NULL, "
                "erased_at = now(), hash = '\\x00' WHERE erased_at IS NULL"
            )
    finally:
        await conn.close()
