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
    """sha256 over the previous hash, the record's position and its exact bytes."""
    digest = hashlib.sha256(prev)
    digest.update(f"\x1f{record.topic}\x1f{record.partition}\x1f{record.offset}\x1f".encode())
    digest.update(record.body)
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
            new_hash = chain_hash(prev, record)
            seq = await conn.fetchval(
                """
                INSERT INTO audit.events (topic, kafka_partition, kafka_offset, event_id,
                    event_type, conversation_id, trace_id, body, payload, prev_hash, hash)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
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
            )
            if seq is None:
                return False
            await conn.execute("UPDATE audit.chain_head SET seq = $1, hash = $2", seq, new_hash)
        return True

    async def verify(self) -> tuple[bool, int]:
        """Recompute the whole chain: (intact, records checked before the first break)."""
        prev = GENESIS
        count = 0
        async with self.pg.acquire() as conn, conn.transaction():
            async for row in conn.cursor(
                "SELECT topic, kafka_partition, kafka_offset, body, prev_hash, hash "
                "FROM audit.events ORDER BY seq"
            ):
                record = Record(
                    row["topic"], row["kafka_partition"], row["kafka_offset"], bytes(row["body"])
                )
                if bytes(row["prev_hash"]) != prev or chain_hash(prev, record) != row["hash"]:
                    return False, count
                prev = bytes(row["hash"])
                count += 1
            head = await conn.fetchval("SELECT hash FROM audit.chain_head")
        return bytes(head) == prev, count
