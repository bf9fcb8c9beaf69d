"""The audit ledger against real PostgreSQL: erasure by record id (bodies jsonb cannot hold
included), a keyed chain whose first broken link is named, an insert-only writer role, and
`cbd audit verify`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from cbd.cli import main as cbd_main
from services.audit.ledger import Ledger, Record
from shared import db
from shared.settings import PostgresSettings

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "audit" / "migrations"
KEY = "integration-audit-key-with-enough-random-bytes-9f3a"


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pg = await db.create_pool(PostgresSettings(dsn=SecretStr(fresh_db)))
    await db.migrate(pg, "audit", MIGRATIONS)
    yield pg
    await pg.close()


async def _as_role(dsn: str, role: str) -> asyncpg.Pool:
    async def init(conn: asyncpg.Connection) -> None:
        for name in ("json", "jsonb"):
            await conn.set_type_codec(
                name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
        await conn.execute(f"SET ROLE {role}")

    pg = await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=init)
    assert pg is not None
    return pg


async def _fill(ledger: Ledger) -> None:
    bodies = [
        b'{"event_id": "a", "conversation_id": "conv-sam", "customer_id": "sam", "t": "hi"}',
        b'{"event_id": "b", "conversation_id": "conv-kim", "customer_id": "kim", "t": "yo"}',
        # jsonb cannot hold \u0000, so this record has no payload: only its columns know sam.
        b'{"event_id": "c", "conversation_id": "conv-sam2", "customer_id": "sam", '
        b'"t": "card \\u0000 4111"}',
        b'{"event_id": "d", "customer_id": "kim", "t": "later"}',
    ]
    for offset, body in enumerate(bodies):
        assert await ledger.append(Record("turn.received", 0, offset, body))


async def test_a_record_jsonb_cannot_hold_is_still_erased(pool: db.Pool) -> None:
    ledger = Ledger(pool, KEY)
    await _fill(ledger)
    assert await pool.fetchval("SELECT payload IS NULL FROM audit.events WHERE seq = 3")

    assert await ledger.erase(["sam"], []) == 2
    assert await ledger.verify() == (True, 4)
    left = await pool.fetchval(
        "SELECT count(*) FROM audit.events e WHERE e::text LIKE '%sam%' OR e::text LIKE '%4111%'"
    )
    assert left == 0


async def test_the_first_broken_link_is_named(pool: db.Pool, fresh_db: str) -> None:
    ledger = Ledger(pool, KEY)
    await _fill(ledger)
    assert (await ledger.check()).intact

    wrong = await Ledger(pool, KEY + "-other").check()
    assert not wrong.intact
    assert wrong.broken_seq == 1
    assert "another key" in wrong.reason

    conn = await asyncpg.connect(fresh_db)
    try:
        # A superuser goes around the trigger and rewrites the third record consistently,
        # recomputing its body digest, but without the key.
        await conn.execute("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
        await conn.execute(
            "UPDATE audit.events SET body = 'forged', body_sha256 = sha256('forged') WHERE seq = 3"
        )
    finally:
        await conn.close()
    result = await ledger.check()
    assert (result.intact, result.broken_seq, result.checked) == (False, 3, 2)
    assert "keyed hash" in result.reason
    assert "seq 3" in result.describe()


async def test_records_cut_off_the_end_are_detected(pool: db.Pool, fresh_db: str) -> None:
    ledger = Ledger(pool, KEY)
    await _fill(ledger)
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
        await conn.execute("DELETE FROM audit.events WHERE seq = 4")
    finally:
        await conn.close()
    result = await ledger.check()
    assert not result.intact
    assert "head" in result.reason


async def test_the_writer_role_can_only_append(pool: db.Pool, fresh_db: str) -> None:
    writer = await _as_role(fresh_db, "cbd_audit_writer")
    try:
        ledger = Ledger(writer, KEY)
        await _fill(ledger)
        assert await ledger.verify() == (True, 4)
        async with writer.acquire() as conn:
            for statement in (
                "UPDATE audit.events SET body = 'x' WHERE seq = 1",
                "DELETE FROM audit.events WHERE seq = 1",
                "TRUNCATE audit.events",
                "UPDATE audit.chain_heads SET hash = '\\x00'",
                "DELETE FROM audit.chain_heads",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
    finally:
        await writer.close()


async def test_the_eraser_role_can_only_erase(pool: db.Pool, fresh_db: str) -> None:
    await _fill(Ledger(pool, KEY))
    eraser = await _as_role(fresh_db, "cbd_audit_eraser")
    try:
        assert await Ledger(pool, KEY, eraser=eraser).erase(["kim"], ["conv-kim"]) == 2
        async with eraser.acquire() as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE audit.events SET hash = '\\x00' WHERE seq = 1")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit.events WHERE seq = 1")
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                # A column it may write, but not an erasure: the trigger refuses it.
                await conn.execute("UPDATE audit.events SET body = 'x' WHERE seq = 1")
    finally:
        await eraser.close()
    assert await Ledger(pool, KEY).verify() == (True, 4)


async def test_cbd_audit_verify(
    pool: db.Pool,
    fresh_db: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _fill(Ledger(pool, KEY))
    monkeypatch.setenv("CBD_PG_DSN", fresh_db)
    monkeypatch.setenv("CBD_AUDIT_CHAIN_KEY", KEY)
    code = await _cli(["audit", "verify"])
    assert (code, capsys.readouterr().out.strip()) == (0, "audit chain intact: 4 records verified")

    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
        await conn.execute("UPDATE audit.events SET body = 'tampered' WHERE seq = 2")
    finally:
        await conn.close()
    code = await _cli(["audit", "verify"])
    out = capsys.readouterr().out
    assert code == 1
    assert "BROKEN at record seq 2: its body was changed" in out


async def _cli(argv: list[str]) -> int:
    """`cbd` runs its own event loop; run it in a thread beside the test's."""
    return await asyncio.to_thread(cbd_main, argv)


async def test_an_erasure_keeps_to_its_tenant(pool: db.Pool) -> None:
    ledger = Ledger(pool, KEY)
    bodies = [
        b'{"event_id": "a", "customer_id": "user-1", "tenant": "acme", "t": "acme text"}',
        b'{"event_id": "b", "customer_id": "user-1", "tenant": "globex", "t": "globex text"}',
        # From before tenants: the default tenant's.
        b'{"event_id": "c", "customer_id": "user-1", "t": "default text"}',
    ]
    for offset, body in enumerate(bodies):
        assert await ledger.append(Record("turn.received", 0, offset, body))

    assert await ledger.erase(["user-1"], [], tenant="acme") == 1
    left = {r["t"] for r in await pool.fetch("SELECT payload ->> 't' AS t FROM audit.events")}
    assert left == {None, "globex text", "default text"}
    assert await ledger.erase(["user-1"], []) == 1
    assert await ledger.verify() == (True, 3)
