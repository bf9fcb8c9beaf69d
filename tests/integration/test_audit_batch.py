"""Audit's batch append against real PostgreSQL: the same chain, idempotence and erasure order
as appending one record at a time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.audit.handlers import AuditHandlers
from services.audit.ledger import Ledger, Record
from shared import db
from shared.events import Channel, CustomerErased, CustomerErasedEvent, utcnow
from shared.settings import PostgresSettings

pytestmark = pytest.mark.integration

AUDIT_MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "audit" / "migrations"
AUDIT_KEY = "integration-test-audit-chain-key-0123456789"


@pytest.fixture
async def ledger(fresh_db: str) -> AsyncIterator[Ledger]:
    pool = await db.create_pool(PostgresSettings(dsn=SecretStr(fresh_db)))
    await db.migrate(pool, "audit", AUDIT_MIGRATIONS)
    yield Ledger(pool, AUDIT_KEY)
    await pool.close()


async def test_a_batch_extends_the_same_chain_and_skips_what_is_recorded(ledger: Ledger) -> None:
    heads_before = await ledger.pg.fetchval("SELECT count(*) FROM audit.chain_heads")
    first = Record("turn.received", 0, 0, b'{"event_id": "x", "conversation_id": "c1"}')
    assert await ledger.append(first) is True
    batch = [
        first,  # redelivered from an earlier fetch
        Record("turn.received", 0, 1, b"\x00\x01 not json"),
        Record("reply.generated", 2, 7, b'["an", "array"]'),
        Record("turn.received", 1, 3, b'{"text": "nul \\u0000 inside"}'),
        Record("turn.received", 1, 3, b'{"text": "nul \\u0000 inside"}'),  # twice in one batch
        Record("turn.received", 1, 4, b"[" * 3000 + b"]" * 3000),
    ]
    assert await ledger.append_many(batch) == [False, True, True, True, False, True]
    assert await ledger.append_many(batch) == [False] * 6, "a redelivered batch adds nothing"
    assert await ledger.append_many([]) == []
    assert await ledger.append(Record("turn.received", 0, 2, b"{}")) is True
    assert await ledger.verify() == (True, 6)
    heads = await ledger.pg.fetchval("SELECT count(*) FROM audit.chain_heads")
    assert heads - heads_before == 6, "one head per record, as one at a time"


async def test_a_broker_that_lost_its_log_reuses_positions_and_nothing_new_is_skipped(
    ledger: Ledger,
) -> None:
    # An embedded broker on in-memory storage, killed, starts its offsets from zero again: the
    # new records sit at positions the old ones hold. Keyed by position alone, they were skipped.
    before = [Record("turn.received", 0, n, b'{"n": %d}' % n) for n in range(3)]
    assert await ledger.append_many(before) == [True] * 3
    after = [Record("turn.received", 0, n, b'{"n": %d, "log": 2}' % n) for n in range(2)]
    assert await ledger.append_many(after) == [True, True]
    assert await ledger.append(Record("turn.received", 0, 2, b'{"n": 2, "log": 2}')) is True
    # Delivered again (same position, same bytes), whichever way: recorded once.
    assert await ledger.append_many([*before, *after]) == [False] * 5
    assert await ledger.append(after[0]) is False
    assert await ledger.pg.fetchval("SELECT count(*) FROM audit.events") == 6
    assert await ledger.verify() == (True, 6)


async def test_json_that_jsonb_refuses_falls_back_to_one_at_a_time(ledger: Ledger) -> None:
    # Python reads a lone surrogate escape; jsonb refuses it, so that record is kept as bytes.
    refused = b'{"event_id": "y", "text": "\\ud800"}'
    batch = [
        Record("turn.received", 0, 0, b'{"conversation_id": "c1"}'),
        Record("turn.received", 0, 1, refused),
        Record("turn.received", 0, 2, b'{"conversation_id": "c2"}'),
    ]
    assert await ledger.append_many(batch) == [True, True, True]
    rows = await ledger.pg.fetch("SELECT body, payload FROM audit.events ORDER BY seq")
    assert [bytes(r["body"]) for r in rows] == [r.body for r in batch]
    assert rows[1]["payload"] is None
    assert await ledger.verify() == (True, 3)


async def test_an_erasure_in_a_batch_erases_what_came_before_it_only(ledger: Ledger) -> None:
    handlers = AuditHandlers(ledger)
    asked = utcnow()
    before = b'{"event_id": "a", "conversation_id": "conv-sam", "customer_id": "sam"}'
    # Sam writing again after the erasure, in a new conversation (an in-flight record from
    # before it would be stored erased by its receipt: see test_erasure_late_records.py).
    after = json.dumps(
        {
            "event_id": "b",
            "conversation_id": "conv-sam2",
            "customer_id": "sam",
            "occurred_at": (asked + timedelta(minutes=1)).isoformat(),
        }
    ).encode()
    erasure = CustomerErasedEvent.create(
        conversation_id="conv-sam",
        customer_id="sam",
        channel=Channel.WEB,
        payload=CustomerErased(
            erased_customer_id="sam",
            conversation_ids=["conv-sam"],
            requested_by="test",
            requested_at=asked,
        ),
    )
    await handlers.on_records(
        [
            Record("turn.received", 0, 0, before),
            Record("customer.erased", 0, 0, erasure.model_dump_json().encode()),
            Record("turn.received", 0, 1, after),
        ]
    )
    rows = await ledger.pg.fetch(
        "SELECT topic, kafka_offset, erased_at IS NOT NULL AS erased FROM audit.events ORDER BY seq"
    )
    assert [(r["topic"], r["kafka_offset"], r["erased"]) for r in rows] == [
        ("turn.received", 0, True),
        ("customer.erased", 0, True),
        ("turn.received", 1, False),
    ]
    assert await ledger.verify() == (True, 3)
