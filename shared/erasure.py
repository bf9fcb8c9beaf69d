"""Right to erasure: the part every service does when memory publishes `customer.erased`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter

from shared.events import DEFAULT_TENANT, CustomerErasedEvent, Envelope

ERASED_KEYS = Counter(
    "cbd_erasure_redis_keys_total", "Redis keys deleted because a customer was erased"
)
ERASURES = Counter("cbd_erasures_total", "customer.erased events this service has carried out")


async def delete_keys(redis: aioredis.Redis, patterns: Iterable[str]) -> int:
    """Delete every key matching the glob patterns, with SCAN so Redis is never blocked."""
    deleted = 0
    for pattern in patterns:
        batch: list[str] = []
        async for key in redis.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await redis.delete(*batch)
                batch = []
        if batch:
            deleted += await redis.delete(*batch)
    ERASED_KEYS.inc(deleted)
    return deleted


def conversation_keys(
    event: CustomerErasedEvent, prefix: str, templates: Iterable[str]
) -> list[str]:
    """Key patterns for each erased conversation: templates use `{conversation}`."""
    return [
        prefix + template.format(conversation=conversation)
        for conversation in event.payload.conversation_ids
        for template in templates
    ]


# ---- erasure receipts: what later writes consult --------------------------------------------

LATE = Counter(
    "cbd_erasure_late_records_total",
    "Records about an erased customer that arrived after the erasure and were stored erased "
    "or dropped, by store.",
    ["store"],
)

RECEIPT_RETENTION = timedelta(days=30)
"""How long a receipt is kept: the longest topic retention (`deploy/k8s/base/kafka/topics.yaml`,
dead letters 30 days). After that no record from before the erasure can still be delivered
(a replay of older records is refused by the broker), so the receipt has nothing left to stop."""

CLOCK_SKEW = timedelta(seconds=5)
"""The edge stamps a turn and memory stamps the erasure, on different clocks: a record of the
customer's that originated up to this long after the erasure still counts as from before it."""


class LateRecord(Exception):
    """The record is about an erased customer and came after the erasure; it must not be kept."""


@dataclass(frozen=True)
class Subject:
    """Who a record is about and when it originated, as the receipt check reads it."""

    tenant: str
    customers: tuple[str, ...]
    conversations: tuple[str, ...]
    origin: datetime | None
    """When the customer's part of it happened (the turn reaching the edge); None: unknown,
    which counts as before any erasure."""

    @classmethod
    def of(cls, event: Envelope, *also: str) -> Subject:
        """The subject of a typed event; `also`: more customer ids it is about (identities)."""
        return cls(
            event.tenant,
            tuple(dict.fromkeys((event.customer_id, *also))),
            (event.conversation_id,),
            _origin_of_event(event),
        )

    @classmethod
    def of_record(cls, envelope: dict[str, Any]) -> Subject:
        """The subject of a raw record (audit keeps what flowed, valid or not)."""
        found = envelope.get("payload")
        inner: dict[str, Any] = found if isinstance(found, dict) else {}
        customers = [envelope.get("customer_id"), inner.get("erased_customer_id")]
        # A dead letter names its conversation by the original record's key.
        conversations = [envelope.get("conversation_id"), envelope.get("key")]
        tenant = envelope.get("tenant")
        return cls(
            tenant if isinstance(tenant, str) else DEFAULT_TENANT,
            tuple(c for c in customers if isinstance(c, str) and c),
            tuple(c for c in conversations if isinstance(c, str) and c),
            origin_of(envelope),
        )


def _origin_of_event(event: Envelope) -> datetime:
    """`origin_of` for a typed event, without dumping it."""
    message = getattr(event.payload, "message", None)
    received = getattr(message, "received_at", None)
    if isinstance(received, datetime):
        return received
    turn_received = getattr(event.payload, "turn_received_at", None)
    return turn_received if isinstance(turn_received, datetime) else event.occurred_at


def origin_of(envelope: dict[str, Any]) -> datetime | None:
    """When the record's customer part happened: the turn's arrival at the edge when the
    record carries it (turns, replies), else when the record was made."""
    inner = envelope.get("payload")
    candidates: list[Any] = []
    if isinstance(inner, dict):
        message = inner.get("message")
        if isinstance(message, dict):
            candidates.append(message.get("received_at"))
        candidates.append(inner.get("turn_received_at"))
    candidates.append(envelope.get("occurred_at"))
    for value in candidates:
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                continue
            if parsed.tzinfo is not None:
                return parsed
    return None


def customer_key(tenant: str, customer_id: str) -> bytes:
    """A customer's receipt key: SHA-256 of tenant and id, so no receipt names anyone."""
    return hashlib.sha256(f"customer\x1f{tenant}\x1f{customer_id}".encode()).digest()


def conversation_key(conversation_id: str) -> bytes:
    """A conversation's receipt key (conversation ids are unique across tenants)."""
    return hashlib.sha256(f"conversation\x1f{conversation_id}".encode()).digest()


class Receipts:
    """One service's erasure receipts (`<schema>.erasure_receipts`, its own migration).

    An erasure records, in its own transaction, a receipt per erased customer id and
    conversation (a SHA-256, the erasure time; no content). Every insert of customer data
    consults them in its transaction: a record about an erased conversation, or about an erased
    customer that originated before the erasure, is late and is stored erased or dropped.

    No window: an erasure holds `lock` exclusively from before it reads what to delete until it
    commits, and every checked insert holds it shared from before its check until it commits.
    So an insert either commits before the erasure reads (and is erased with the rest) or
    checks after the erasure committed (and sees its receipt). Shared holders never wait for
    each other; only an erasure, which is rare, waits for them and briefly holds them up.
    """

    def __init__(self, table: str, lock: str) -> None:
        # Both are this module's callers' constants, never input.
        self.table = table
        self.lock = lock

    async def hold(self, conn: Any) -> None:
        """Take the erasure lock exclusively (first thing in an erasure's transaction)."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.lock)

    async def share(self, conn: Any) -> None:
        """Take the erasure lock shared (first thing in a checked insert's transaction)."""
        await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))", self.lock)

    async def record(
        self,
        conn: Any,
        *,
        tenant: str,
        customers: Iterable[str],
        conversations: Iterable[str],
        erased_at: datetime,
    ) -> None:
        """Write the erasure's receipts (idempotent: a redelivered erasure keeps the latest
        time) and drop receipts past their retention, holding the erasure lock (taken here if
        the transaction has not taken it yet: an advisory lock is re-entrant)."""
        await self.hold(conn)
        # One row per key: the erased id is also among its own identities.
        kinds = {customer_key(tenant, c): "customer" for c in customers}
        kinds.update({conversation_key(c): "conversation" for c in conversations})
        await conn.execute(
            f"""
            INSERT INTO {self.table} AS r (key, kind, erased_at)
            SELECT k, kind, $3 FROM unnest($1::bytea[], $2::text[]) u(k, kind)
            ON CONFLICT (key) DO UPDATE SET
                erased_at = GREATEST(r.erased_at, EXCLUDED.erased_at), recorded_at = now()
            """,  # noqa: S608 (the table name is a constant)
            list(kinds),
            list(kinds.values()),
            erased_at,
        )
        await conn.execute(
            f"DELETE FROM {self.table} WHERE recorded_at < now() - $1::interval",  # noqa: S608
            RECEIPT_RETENTION,
        )

    async def late(self, conn: Any, subjects: Sequence[Subject]) -> list[bool]:
        """Which of these subjects are late (one query for them all). Call after `share` or
        `hold`. A conversation first seen in a late record gets a receipt of its own, so what
        follows in it (a reply, a close, a rating) is late too, whenever it comes."""
        wanted = {
            key
            for s in subjects
            for key in (
                *(customer_key(s.tenant, c) for c in s.customers),
                *(conversation_key(c) for c in s.conversations),
            )
        }
        if not wanted:
            return [False] * len(subjects)
        rows = await conn.fetch(
            f"SELECT key, erased_at FROM {self.table} WHERE key = ANY($1::bytea[])",  # noqa: S608
            list(wanted),
        )
        if not rows:
            return [False] * len(subjects)
        receipts = {bytes(r["key"]): r["erased_at"] for r in rows}
        verdicts: list[bool] = []
        followed: dict[bytes, datetime] = {}
        for s in subjects:
            if any(conversation_key(c) in receipts for c in s.conversations):
                verdicts.append(True)
                continue
            times = [
                receipts[k]
                for k in (customer_key(s.tenant, c) for c in s.customers)
                if k in receipts
            ]
            late = any(s.origin is None or s.origin <= t + CLOCK_SKEW for t in times)
            verdicts.append(late)
            if late:
                for c in s.conversations:
                    followed[conversation_key(c)] = max(times)
        if followed:
            await conn.execute(
                f"""
                INSERT INTO {self.table} (key, kind, erased_at)
                SELECT k, 'conversation', t FROM unnest($1::bytea[], $2::timestamptz[]) u(k, t)
                ON CONFLICT (key) DO NOTHING
                """,  # noqa: S608 (the table name is a constant)
                list(followed),
                list(followed.values()),
            )
        return verdicts

    async def check(self, conn: Any, subject: Subject, store: str) -> bool:
        """Take the lock shared and say whether the record is late (counted under `store`):
        the first thing in a transaction that inserts customer data, which then inserts
        nothing and commits (so a receipt `late` added is kept)."""
        await self.share(conn)
        if (await self.late(conn, [subject]))[0]:
            LATE.labels(store).inc()
            return True
        return False


# ---- the same for stores kept in Redis --------------------------------------------------------

LATE_LUA = """
local function late(first, origin, skew, ttl)
    -- KEYS[first]: the conversation's receipt; KEYS[first + 1..]: its customers' receipts,
    -- each holding the erasure's time in epoch ms. A customer's receipt stops what
    -- originated before the erasure ('' = unknown, which counts as before) and then marks the
    -- conversation erased too, so what follows in it is stopped whenever it comes.
    if redis.call('EXISTS', KEYS[first]) == 1 then
        return true
    end
    for i = first + 1, #KEYS do
        local at = redis.call('GET', KEYS[i])
        if at and (origin == '' or tonumber(origin) <= tonumber(at) + tonumber(skew)) then
            redis.call('SET', KEYS[first], at, 'EX', ttl)
            return true
        end
    end
    return false
end
"""
"""A Lua function for scripts that write customer data to Redis: the check runs in the same
script as the write, so it is atomic with it. An erasure writes its receipts before it deletes
keys, so a write either lands before the receipts (and is deleted) or sees them."""

_SET_UNLESS_LATE_LUA = (
    LATE_LUA
    + """
if late(2, ARGV[3], ARGV[4], ARGV[5]) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
)


@dataclass(frozen=True)
class LateCheck:
    """A subject's receipt keys and arguments for `LATE_LUA`'s `late(first, ...)`."""

    keys: list[str]
    """The conversation's receipt key, then each customer's."""
    origin: str
    skew: str
    ttl: str


class RedisReceipts:
    """Erasure receipts for what a service keeps in Redis (`<prefix>erased:...` keys).

    The same receipts as `Receipts` (SHA-256 keys, the erasure's time, no content), kept as
    keys that expire after `RECEIPT_RETENTION`; checks run inside the Lua script that writes.
    """

    def __init__(self, redis: aioredis.Redis, key_prefix: str) -> None:
        self.redis = redis
        self.prefix = f"{key_prefix}erased:"
        self._set = redis.register_script(_SET_UNLESS_LATE_LUA)

    def check(self, subject: Subject) -> LateCheck:
        """The keys and arguments that check `subject` (its first conversation)."""
        conversation = subject.conversations[0] if subject.conversations else ""
        keys = [self.prefix + conversation_key(conversation).hex()]
        keys += [self.prefix + customer_key(subject.tenant, c).hex() for c in subject.customers]
        origin = "" if subject.origin is None else str(int(subject.origin.timestamp() * 1000))
        return LateCheck(
            keys,
            origin,
            str(int(CLOCK_SKEW.total_seconds() * 1000)),
            str(int(RECEIPT_RETENTION.total_seconds())),
        )

    async def record(self, event: CustomerErasedEvent) -> None:
        """Write the erasure's receipts; call before deleting what the service keeps."""
        erased = event.payload
        at = str(int(erased.requested_at.timestamp() * 1000))
        ttl = int(RECEIPT_RETENTION.total_seconds())
        keys = [conversation_key(c) for c in erased.conversation_ids]
        keys += [
            customer_key(event.tenant, c) for c in {erased.erased_customer_id, *erased.identities}
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(self.prefix + key.hex(), at, ex=ttl)
            await pipe.execute()

    async def set_unless_late(
        self, key: str, value: str, ttl_s: int, subject: Subject, store: str
    ) -> bool:
        """SET `key` unless the subject is late (then counted under `store`); True if set."""
        check = self.check(subject)
        done = await self._set(
            keys=[key, *check.keys], args=[value, ttl_s, check.origin, check.skew, check.ttl]
        )
        if not done:
            LATE.labels(store).inc()
        return bool(done)
