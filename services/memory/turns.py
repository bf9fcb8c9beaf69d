"""Where turns live: PostgreSQL as the record, Redis as the hot recent context.

Turns are stored and read within their tenant: a conversation id another tenant also sent
never joins, reads or caches the first tenant's turns.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from shared.db import Pool
from shared.erasure import LateRecord, Receipts, Subject
from shared.events import DEFAULT_TENANT, Envelope, HistoryTurn, Role

ContextSource = Literal["cache", "database", "empty"]


RECEIPTS = "memory.erasure_receipts"
"""Memory's erasure receipts (`shared.erasure.Receipts`), checked before a turn is stored."""
ERASURE_LOCK = "cbd_memory_erasure"
"""The lock an erasure holds exclusively and every checked write of memory's holds shared."""


def conversation_key(key_prefix: str, tenant: str, conversation_id: str) -> str:
    """The Redis list of a conversation's latest turns (the default tenant's keys unchanged)."""
    scope = "" if tenant == DEFAULT_TENANT else f"{tenant}/"
    return f"{key_prefix}conv:{scope}{conversation_id}:turns"


def meaning_key(key_prefix: str, tenant: str, conversation_id: str) -> str:
    """The Redis list of the embeddings of a conversation's latest customer turns."""
    return conversation_key(key_prefix, tenant, conversation_id).removesuffix(":turns") + (
        ":meanings"
    )


Meanings = dict[datetime, npt.NDArray[np.float32]]
"""Customer turns' embeddings by the time the turn was received."""


def with_similarity(
    history: list[HistoryTurn], meanings: Meanings, vector: npt.NDArray[np.float32]
) -> list[HistoryTurn]:
    """The history with each customer turn's closeness in meaning to `vector` filled in.

    Turns whose embedding is not cached (other roles, a cache rebuilt from PostgreSQL) stay
    without one, and escalation compares those by their words.
    """
    out: list[HistoryTurn] = []
    for turn in history:
        known = meanings.get(turn.at) if turn.role is Role.CUSTOMER else None
        if known is None or known.shape != vector.shape:
            out.append(turn)
            continue
        alike = max(-1.0, min(1.0, float(np.dot(known, vector))))
        out.append(turn.model_copy(update={"similarity": round(alike, 4)}))
    return out


def _encode_meaning(at: datetime, vector: npt.NDArray[np.float32]) -> str:
    # float16 halves the bytes; cosines move by about 1e-3, far below any threshold's margin.
    raw = base64.b64encode(vector.astype(np.float16).tobytes()).decode("ascii")
    return json.dumps({"at": at.isoformat(), "v": raw})


def _decode_meanings(entries: list[Any]) -> Meanings:
    meanings: Meanings = {}
    for entry in entries:
        try:
            data = json.loads(entry)
            vector = np.frombuffer(base64.b64decode(data["v"]), dtype=np.float16)
            meanings[datetime.fromisoformat(data["at"])] = vector.astype(np.float32)
        except (ValueError, KeyError, TypeError):
            # An unreadable entry costs one comparison by words, never the turn.
            continue
    return meanings


@dataclass(frozen=True)
class StoredTurn:
    """One turn to record."""

    turn_key: uuid.UUID
    role: Role
    text: str
    occurred_at: datetime
    in_reply_to: uuid.UUID | None = None
    emotion: dict[str, Any] | None = None
    meaning: npt.NDArray[np.float32] | None = None
    """The message's embedding (customer turns), cached so later turns compare by meaning
    without embedding this one again."""


class TurnStore:
    """Writes turns to PostgreSQL and keeps each conversation's latest turns in Redis."""

    def __init__(
        self, pg: Pool, redis: aioredis.Redis, *, key_prefix: str, keep: int, ttl_s: int
    ) -> None:
        self.pg = pg
        self.redis = redis
        self.key_prefix = key_prefix
        self.keep = keep
        self.ttl_s = ttl_s
        self.receipts = Receipts(RECEIPTS, ERASURE_LOCK)

    def _key(self, tenant: str, conversation_id: str) -> str:
        return conversation_key(self.key_prefix, tenant, conversation_id)

    async def record(
        self, event: Envelope, turn: StoredTurn, *, subject: Subject | None = None
    ) -> bool:
        """Store the turn; False when it was already stored (a redelivered event).

        Raises `LateRecord`, storing nothing, when the turn is about a customer erased before
        it arrived (`subject`: who it is about, by default the event's customer and
        conversation).
        """
        async with self.pg.acquire() as conn, conn.transaction():
            late = await self.receipts.check(conn, subject or Subject.of(event), "memory.turns")
            inserted = False if late else await self._insert(conn, event, turn)
            if inserted:
                # Cached before the commit: an erasure waits for this transaction to commit
                # and then deletes the conversation's keys, this entry with them.
                await self._cache(event.tenant, event.conversation_id, turn)
        if late:
            raise LateRecord("memory.turns")
        return bool(inserted)

    async def _insert(self, conn: Any, event: Envelope, turn: StoredTurn) -> bool:
        await conn.execute(
            """
            INSERT INTO memory.customers (tenant, customer_id) VALUES ($1, $2)
            ON CONFLICT (tenant, customer_id) DO UPDATE SET last_seen_at = now()
            """,
            event.tenant,
            event.customer_id,
        )
        await conn.execute(
            """
            INSERT INTO memory.conversations
                (conversation_id, customer_id, channel, started_at, last_activity_at, tenant)
            VALUES ($1, $2, $3, $4, $4, $5)
            ON CONFLICT (conversation_id)
            DO UPDATE SET last_activity_at = GREATEST(
                memory.conversations.last_activity_at, EXCLUDED.last_activity_at)
            WHERE memory.conversations.tenant = EXCLUDED.tenant
            """,
            event.conversation_id,
            event.customer_id,
            event.channel.value,
            turn.occurred_at,
            event.tenant,
        )
        inserted = await conn.fetchval(
            """
            INSERT INTO memory.turns (turn_key, conversation_id, customer_id, role, text,
                channel, in_reply_to, emotion, event_id, trace_id, occurred_at, tenant)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            ON CONFLICT (turn_key) DO NOTHING
            RETURNING true
            """,
            turn.turn_key,
            event.conversation_id,
            event.customer_id,
            turn.role.value,
            turn.text,
            event.channel.value,
            turn.in_reply_to,
            turn.emotion,
            event.event_id,
            event.trace_id,
            turn.occurred_at,
            event.tenant,
        )
        return bool(inserted)

    async def _cache(self, tenant: str, conversation_id: str, turn: StoredTurn) -> None:
        entry = HistoryTurn(role=turn.role, text=turn.text, at=turn.occurred_at)
        key = self._key(tenant, conversation_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, entry.model_dump_json(exclude_none=True))
            pipe.ltrim(key, -self.keep - 1, -1)
            pipe.expire(key, self.ttl_s)
            if turn.meaning is not None:
                meanings = meaning_key(self.key_prefix, tenant, conversation_id)
                pipe.rpush(meanings, _encode_meaning(turn.occurred_at, turn.meaning))
                pipe.ltrim(meanings, -self.keep - 1, -1)
                pipe.expire(meanings, self.ttl_s)
            await pipe.execute()

    async def has(self, turn_key: uuid.UUID, *, tenant: str = DEFAULT_TENANT) -> bool:
        """Whether the turn (a message or reply, by its key) is stored and committed."""
        found = await self.pg.fetchval(
            "SELECT true FROM memory.turns WHERE turn_key = $1 AND tenant = $2", turn_key, tenant
        )
        return bool(found)

    async def meanings(self, conversation_id: str, *, tenant: str = DEFAULT_TENANT) -> Meanings:
        """The cached embeddings of the conversation's latest customer turns."""
        key = meaning_key(self.key_prefix, tenant, conversation_id)
        return _decode_meanings(await self.redis.lrange(key, 0, -1))

    async def recent(
        self, conversation_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> tuple[list[HistoryTurn], ContextSource]:
        """The conversation's latest turns, oldest first, and where they came from.

        Redis answers when it has the conversation; after a Redis restart or expiry the turns
        come from PostgreSQL and the cache is rebuilt from them.
        """
        key = self._key(tenant, conversation_id)
        cached = await self.redis.lrange(key, 0, -1)
        if cached:
            return [HistoryTurn.model_validate_json(raw) for raw in cached], "cache"
        rows = await self.pg.fetch(
            """
            SELECT role, text, occurred_at FROM (
                SELECT role, text, occurred_at FROM memory.turns
                WHERE tenant = $3 AND conversation_id = $1 ORDER BY occurred_at DESC LIMIT $2
            ) latest ORDER BY occurred_at
            """,
            conversation_id,
            self.keep + 1,
            tenant,
        )
        if not rows:
            return [], "empty"
        turns = [
            HistoryTurn(role=Role(r["role"]), text=r["text"], at=r["occurred_at"]) for r in rows
        ]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.rpush(key, *[t.model_dump_json() for t in turns])
            pipe.expire(key, self.ttl_s)
            await pipe.execute()
        return turns, "database"
