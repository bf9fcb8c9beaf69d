"""The audit ledger: append a record, verify the chain."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.db import Pool

log = logging.getLogger(__name__)

GENESIS = b"\x00"


@dataclass(frozen=True)
class Record:
    """One Kafka record as audit received it."""

    topic: str
    partition: int
    offset: int
    body: bytes


def parse_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is anything else (it is kept as bytes)."""
    # PostgreSQL's jsonb cannot hold \u0000; such a record is kept as bytes only.
    if b"\\u0000" in body:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def chain_hash(prev: bytes, record: Record) -> bytes:
    """Chain version 1: sha256 over the previous hash, the record's position and its bytes."""
    digest = hashlib.sha256(prev)
    digest.update(f"\x1f{record.topic}\x1f{record.partition}\x1f{record.offset}\x1f".encode())
    digest.update(record.body)
    return digest.digest()


def chain_hash_v2(prev: bytes, record: Record, body_sha256: bytes) -> bytes:
    """Chain version 2: like version 1 over the body's digest, so the body can be erased."""
    digest = hashlib.sha256(prev)
    digest.update(f"\x1f{record.topic}\x1f{record.partition}\x1f{record.offset}\x1f".encode())
    digest.update(body_sha256)
    return digest.digest()


def _text(envelope: dict[str, Any], key: str) -> str | None:
    value = envelope.get(key)
    return value if isinstance(value, str) else None


def _uuid(envelope: dict[str, Any]) -> str | None:
    value = _text(envelope, "event_id") or _text(envelope, "dead_letter_id")
    return value if value is not None and len(value) == 36 else None


class Ledger:
    """Appends records to audit.events, one hash chain across all topics."""

    def __init__(self, pg: Pool) -> None:
        self.pg = pg

    async def append(self, record: Record) -> bool:
        """Record it once; False when this topic/partition/offset is already recorded."""
        payload = parse_object(record.body)
        try:
            return await self._insert(record, payload)
        except (asyncpg.DataError, asyncpg.ProgramLimitExceededError) as exc:
            if payload is None:
                raise
            # JSON that Python accepts but jsonb refuses: keep the exact bytes, which is what
            # the chain covers anyway, rather than stall the partition on it.
            log.warning("record kept as bytes only (%s): %s", type(exc).__name__, exc)
            return await self._insert(record, None)

    async def _insert(self, record: Record, payload: dict[str, Any] | None) -> bool:
        envelope = payload or {}
        async with self.pg.acquire() as conn, conn.transaction():
            head = await conn.fetchrow("SELECT hash FROM audit.chain_head FOR UPDATE")
            assert head is not None
            prev = bytes(head["hash"])
            body_sha256 = hashlib.sha256(record.body).digest()
            new_hash = chain_hash_v2(prev, record, body_sha256)
            seq = await conn.fetchval(
                """
                INSERT INTO audit.events (topic, kafka_partition, kafka_offset, event_id,
                    event_type, conversation_id, trace_id, body, payload, prev_hash, hash,
                    body_sha256, chain_version)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 2)
                ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING
                RETURNING seq
                """,
                record.topic,
                record.partition,
                record.offset,
                _uuid(envelope),
                _text(envelope, "event_type"),
                _text(envelope, "conversation_id"),
                _text(envelope, "trace_id"),
                record.body,
                payload,
                prev,
                new_hash,
                body_sha256,
            )
            if seq is None:
                return False
            await conn.execute("UPDATE audit.chain_head SET seq = $1, hash = $2", seq, new_hash)
        return True

    async def verify(self) -> tuple[bool, int]:
        """Recompute the whole chain: (intact, records checked before the first break).

        An erased record is checked through the digest kept of its body; an erased record
        written before chain version 2 cannot be recomputed, so only its links are checked.
        """
        prev = GENESIS
        count = 0
        async with self.pg.acquire() as conn, conn.transaction():
            async for row in conn.cursor(
                "SELECT topic, kafka_partition, kafka_offset, body, prev_hash, hash, "
                "body_sha256, chain_version, erased_at FROM audit.events ORDER BY seq"
            ):
                record = Record(
                    row["topic"], row["kafka_partition"], row["kafka_offset"], bytes(row["body"])
                )
                if bytes(row["prev_hash"]) != prev or not _row_hash_ok(prev, record, row):
                    return False, count
                prev = bytes(row["hash"])
                count += 1
            head = await conn.fetchval("SELECT hash FROM audit.chain_head")
        return bytes(head) == prev, count

    async def erase(self, customer_ids: list[str], conversation_ids: list[str]) -> int:
        """Erase the content of every record about these customers; return records erased.

        The records keep their place, type, id and hashes, so the chain still verifies and
        the ledger still shows that something happened, without saying what or to whom.
        """
        erased = await self.pg.fetchval(
            """
            WITH gone AS (
                UPDATE audit.events
                SET body = '\\x'::bytea, payload = NULL, conversation_id = NULL,
                    erased_at = now()
                WHERE erased_at IS NULL AND (
                    conversation_id = ANY($2)
                    OR payload ->> 'customer_id' = ANY($1)
                    OR payload ->> 'key' = ANY($2)
                    OR payload -> 'payload' ->> 'erased_customer_id' = ANY($1))
                RETURNING 1)
            SELECT count(*) FROM gone
            """,
            customer_ids,
            conversation_ids,
        )
        return int(erased or 0)


def _row_hash_ok(prev: bytes, record: Record, row: Any) -> bool:
    if row["chain_version"] == 1:
        if row["erased_at"] is not None:
            return True
        return chain_hash(prev, record) == bytes(row["hash"])
    digest = bytes(row["body_sha256"])
    if row["erased_at"] is None and hashlib.sha256(record.body).digest() != digest:
        return False
    return chain_hash_v2(prev, record, digest) == bytes(row["hash"])
