"""The audit ledger: append a record, verify the chain."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Pool
from shared.erasure import LATE, Receipts, Subject
from shared.events import DEFAULT_TENANT, utcnow

log = logging.getLogger(__name__)

GENESIS = b"\x00"

CHAIN_LOCK = "cbd_audit_chain"
"""The advisory lock every writer of the chain holds; an erasure holds it too, so a record
checks the erasure receipts either before an erasure or after it committed, never between."""


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


def chain_hash_v3(key: bytes, prev: bytes, record: Record, body_sha256: bytes) -> bytes:
    """Chain version 3: HMAC-SHA256 under the ledger's key over what version 2 hashes, so a
    writer without the key cannot forge a consistent chain."""
    mac = hmac.new(key, prev, hashlib.sha256)
    mac.update(f"\x1f{record.topic}\x1f{record.partition}\x1f{record.offset}\x1f".encode())
    mac.update(body_sha256)
    return mac.digest()


def key_id(key: bytes) -> str:
    """A name for a chain key that does not reveal it (for rotation and error messages)."""
    return hmac.new(key, b"cbd-audit-key-id", hashlib.sha256).hexdigest()[:16]


def subject(body: bytes) -> dict[str, Any]:
    """The envelope as Python reads it, even where jsonb could not store it (\\u0000)."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _customer(envelope: dict[str, Any]) -> str | None:
    inner = envelope.get("payload")
    erased = inner.get("erased_customer_id") if isinstance(inner, dict) else None
    return _text(envelope, "customer_id") or (erased if isinstance(erased, str) else None)


@dataclass(frozen=True)
class Verification:
    """What recomputing the chain found."""

    intact: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""

    def describe(self) -> str:
        """One line for an operator."""
        if self.intact:
            return f"audit chain intact: {self.checked} records verified"
        where = f"at record seq {self.broken_seq}" if self.broken_seq is not None else "at the head"
        return f"audit chain BROKEN {where}: {self.reason} ({self.checked} records verified before)"


def _text(envelope: dict[str, Any], key: str) -> str | None:
    value = envelope.get(key)
    return value if isinstance(value, str) else None


def _uuid(envelope: dict[str, Any]) -> str | None:
    value = _text(envelope, "event_id") or _text(envelope, "dead_letter_id")
    return value if value is not None and len(value) == 36 else None


class Ledger:
    """Appends records to audit.events, one keyed hash chain across all topics.

    `eraser` is the pool erasure runs on (a role that may only blank erasable columns); by
    default the writer's pool.
    """

    def __init__(self, pg: Pool, key: str, eraser: Pool | None = None) -> None:
        if not key:
            raise ValueError("the audit chain needs a key")
        self.pg = pg
        self.eraser = eraser or pg
        self.key = key.encode()
        self.key_id = key_id(self.key)
        self.receipts = Receipts("audit.erasure_receipts", CHAIN_LOCK)

    async def append(self, record: Record) -> bool:
        """Record it once; False when this record (its topic/partition/offset and bytes) is
        already recorded."""
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

    async def append_many(self, records: Sequence[Record]) -> list[bool]:
        """Record a batch in one transaction; per record, False when it was already recorded.

        The same chain as `append` one by one, at a fraction of the cost: one lock, one read of
        the head, one existence check and one pipelined insert per batch instead of per record.
        When jsonb refuses one record's JSON the whole batch is rolled back and recorded one by
        one, so that record is kept as bytes as `append` keeps it.
        """
        if not records:
            return []
        parsed = [(record, parse_object(record.body)) for record in records]
        try:
            return await self._insert_many(parsed)
        except (asyncpg.DataError, asyncpg.ProgramLimitExceededError) as exc:
            log.info("batch recorded one by one (%s)", type(exc).__name__)
            return [await self.append(record) for record in records]

    async def _insert_many(self, parsed: list[tuple[Record, dict[str, Any] | None]]) -> list[bool]:
        digests = [hashlib.sha256(r.body).digest() for r, _ in parsed]
        keys = (
            [r.topic for r, _ in parsed],
            [r.partition for r, _ in parsed],
            [r.offset for r, _ in parsed],
            digests,
        )
        async with self.pg.acquire() as conn, conn.transaction():
            # Every writer takes this lock first, so nothing can be inserted between the
            # existence check and the insert below: the chain computed here is the one stored.
            await self.receipts.hold(conn)
            prev = await _head(conn)
            rows = await conn.fetch(
                """
                SELECT e.topic, e.kafka_partition, e.kafka_offset, e.body_sha256
                FROM audit.events e
                JOIN unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[]) AS u(t, p, o, d)
                  ON e.topic = u.t AND e.kafka_partition = u.p AND e.kafka_offset = u.o
                 AND e.body_sha256 = u.d
                """,
                *keys,
            )
            seen = {(row[0], row[1], row[2], bytes(row[3])) for row in rows}
            results: list[bool] = []
            new: list[tuple[Record, dict[str, Any] | None, dict[str, Any], bytes]] = []
            for (record, payload), body_sha256 in zip(parsed, digests, strict=True):
                key = (record.topic, record.partition, record.offset, body_sha256)
                if key in seen:
                    results.append(False)
                    continue
                seen.add(key)
                envelope = payload if payload is not None else subject(record.body)
                new.append((record, payload, envelope, body_sha256))
                results.append(True)
            late = await self.receipts.late(conn, [Subject.of_record(e) for _, _, e, _ in new])
            args: list[tuple[Any, ...]] = []
            for (record, payload, envelope, body_sha256), erased in zip(new, late, strict=True):
                new_hash = chain_hash_v3(self.key, prev, record, body_sha256)
                args.append(
                    self._row(record, payload, envelope, prev, new_hash, body_sha256, erased)
                )
                prev = new_hash
            if not args:
                return results
            # No ON CONFLICT: under the lock a conflict cannot happen, and if it somehow did
            # the batch must fail (and come back) rather than leave a gap in the chain.
            await conn.executemany(
                """
                INSERT INTO audit.events (topic, kafka_partition, kafka_offset, event_id,
                    event_type, conversation_id, trace_id, body, payload, prev_hash, hash,
                    body_sha256, chain_version, customer_id, key_id, erased_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 3, $13, $14, $15)
                """,
                args,
            )
            await conn.execute(
                """
                INSERT INTO audit.chain_heads (seq, hash)
                SELECT e.seq, e.hash FROM audit.events e
                JOIN unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[]) AS u(t, p, o, d)
                  ON e.topic = u.t AND e.kafka_partition = u.p AND e.kafka_offset = u.o
                 AND e.body_sha256 = u.d
                """,
                [a[0] for a in args],
                [a[1] for a in args],
                [a[2] for a in args],
                [a[11] for a in args],
            )
        return results

    def _row(
        self,
        record: Record,
        payload: dict[str, Any] | None,
        envelope: dict[str, Any],
        prev: bytes,
        new_hash: bytes,
        body_sha256: bytes,
        erased: bool,
    ) -> tuple[Any, ...]:
        """One `audit.events` row's values, in the INSERTs' column order.

        `erased`: the record is about a customer erased before it arrived, so it is stored as
        `erase` leaves a record (no body, payload, conversation or customer; its digest and
        chain hash as for any record), and the chain verifies as before.
        """
        if erased:
            LATE.labels("audit.events").inc()
        return (
            record.topic,
            record.partition,
            record.offset,
            _uuid(envelope),
            _text(envelope, "event_type"),
            None if erased else _text(envelope, "conversation_id"),
            _text(envelope, "trace_id"),
            b"" if erased else record.body,
            None if erased else payload,
            prev,
            new_hash,
            body_sha256,
            None if erased else _customer(envelope),
            self.key_id,
            utcnow() if erased else None,
        )

    async def _insert(self, record: Record, payload: dict[str, Any] | None) -> bool:
        # Who a record is about comes from Python's parse, which reads what jsonb cannot
        # store, so erasure finds every record by its columns.
        envelope = payload if payload is not None else subject(record.body)
        async with self.pg.acquire() as conn, conn.transaction():
            # One writer at a time extends the chain; an advisory lock needs no UPDATE right.
            await self.receipts.hold(conn)
            body_sha256 = hashlib.sha256(record.body).digest()
            known = await conn.fetchval(
                "SELECT true FROM audit.events WHERE topic = $1 AND kafka_partition = $2 "
                "AND kafka_offset = $3 AND body_sha256 = $4",
                record.topic,
                record.partition,
                record.offset,
                body_sha256,
            )
            if known:
                return False
            prev = await _head(conn)
            new_hash = chain_hash_v3(self.key, prev, record, body_sha256)
            (erased,) = await self.receipts.late(conn, [Subject.of_record(envelope)])
            seq = await conn.fetchval(
                """
                INSERT INTO audit.events (topic, kafka_partition, kafka_offset, event_id,
                    event_type, conversation_id, trace_id, body, payload, prev_hash, hash,
                    body_sha256, chain_version, customer_id, key_id, erased_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 3, $13, $14, $15)
                ON CONFLICT (topic, kafka_partition, kafka_offset, body_sha256) DO NOTHING
                RETURNING seq
                """,
                *self._row(record, payload, envelope, prev, new_hash, body_sha256, erased),
            )
            if seq is None:
                return False
            await conn.execute(
                "INSERT INTO audit.chain_heads (seq, hash) VALUES ($1, $2)", seq, new_hash
            )
        return True

    async def verify(self) -> tuple[bool, int]:
        """Recompute the whole chain: (intact, records checked before the first break)."""
        result = await self.check()
        return result.intact, result.checked

    async def check(self) -> Verification:
        """Recompute the whole chain and name the first broken link, if any.

        An erased record is checked through the digest kept of its body; an erased record
        written before chain version 2 cannot be recomputed, so only its links are checked.
        The last record's hash must equal the head kept in audit.chain_heads.
        """
        prev = GENESIS
        count = 0
        async with self.pg.acquire() as conn, conn.transaction():
            async for row in conn.cursor(
                "SELECT seq, topic, kafka_partition, kafka_offset, body, prev_hash, hash, "
                "body_sha256, chain_version, erased_at, key_id FROM audit.events ORDER BY seq"
            ):
                record = Record(
                    row["topic"], row["kafka_partition"], row["kafka_offset"], bytes(row["body"])
                )
                if bytes(row["prev_hash"]) != prev:
                    return Verification(
                        False, count, row["seq"], "does not follow the record before"
                    )
                if problem := self._row_problem(prev, record, row):
                    return Verification(False, count, row["seq"], problem)
                prev = bytes(row["hash"])
                count += 1
            head = await _head(conn)
        if head != prev:
            return Verification(False, count, None, "the head does not match the last record")
        return Verification(True, count)

    def _row_problem(self, prev: bytes, record: Record, row: Any) -> str | None:
        if row["chain_version"] == 3:
            if row["key_id"] != self.key_id:
                return f"written under another key ({row['key_id']}, this one is {self.key_id})"
            digest = bytes(row["body_sha256"])
            if row["erased_at"] is None and hashlib.sha256(record.body).digest() != digest:
                return "its body was changed"
            if chain_hash_v3(self.key, prev, record, digest) != bytes(row["hash"]):
                return "its hash is not the keyed hash of its content"
            return None
        return None if _row_hash_ok(prev, record, row) else "its hash does not match its content"

    async def erase(
        self,
        customer_ids: list[str],
        conversation_ids: list[str],
        *,
        tenant: str = DEFAULT_TENANT,
        erased_at: datetime | None = None,
    ) -> int:
        """Erase the content of every record about these customers; return records erased.

        The records keep their place, type, id and hashes, so the chain still verifies and
        the ledger still shows that something happened, without saying what or to whom.
        Customer ids count within `tenant` (records from before tenants are the default
        tenant's): another tenant's customer with the same id keeps their records. A record
        whose body jsonb could not hold names no tenant, and is erased when its ids match.

        The erasure's receipts (`erased_at`: when it was asked for) commit with it, under the
        chain's lock, so a record about these customers appended later is stored erased.
        """
        async with self.eraser.acquire() as conn, conn.transaction():
            await self.receipts.record(
                conn,
                tenant=tenant,
                customers=customer_ids,
                conversations=conversation_ids,
                erased_at=erased_at or utcnow(),
            )
            # First the records, by id: every column a record's subject was kept in, whether
            # or not its JSON could be stored (bodies with \\u0000 have no payload).
            seqs = await conn.fetch(
                """
                SELECT seq FROM audit.events
                WHERE erased_at IS NULL AND (
                    conversation_id = ANY($2)
                    OR payload ->> 'key' = ANY($2)
                    OR ((payload IS NULL OR COALESCE(payload ->> 'tenant', $4) = $3)
                        AND (customer_id = ANY($1)
                             OR payload ->> 'customer_id' = ANY($1)
                             OR payload -> 'payload' ->> 'erased_customer_id' = ANY($1))))
                """,
                customer_ids,
                conversation_ids,
                tenant,
                DEFAULT_TENANT,
            )
            ids = [row["seq"] for row in seqs]
            if not ids:
                return 0
            await conn.execute(
                """
                UPDATE audit.events
                SET body = '\\x'::bytea, payload = NULL, conversation_id = NULL,
                    customer_id = NULL, erased_at = now()
                WHERE seq = ANY($1::bigint[])
                """,
                ids,
            )
        return len(ids)


async def _head(conn: Any) -> bytes:
    """The chain's current head: the newest row of audit.chain_heads (or the genesis)."""
    head = await conn.fetchval("SELECT hash FROM audit.chain_heads ORDER BY seq DESC LIMIT 1")
    return GENESIS if head is None else bytes(head)


def _row_hash_ok(prev: bytes, record: Record, row: Any) -> bool:
    if row["chain_version"] == 1:
        if row["erased_at"] is not None:
            return True
        return chain_hash(prev, record) == bytes(row["hash"])
    digest = bytes(row["body_sha256"])
    if row["erased_at"] is None and hashlib.sha256(record.body).digest() != digest:
        return False
    return chain_hash_v2(prev, record, digest) == bytes(row["hash"])
