"""The customer model in PostgreSQL: identities, profile, memories, issues and moods.

PostgreSQL is the record for everything here; Redis only caches identity resolution, so a
lost cache costs a query, never data.

Every customer belongs to a tenant, and every key and query here includes it: two tenants
that both have a customer "user-1" (or both know the same phone number) have two customers
who share nothing. Callers that know no tenant get `DEFAULT_TENANT`, the single-tenant set-up.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from services.memory.extraction import Extraction, IssueRaised, IssueResolved, Learned
from services.memory.turns import ERASURE_LOCK, RECEIPTS, conversation_key, meaning_key
from shared.db import Pool
from shared.embedding import Embedder, to_pgvector
from shared.erasure import LATE, LateRecord, Receipts, Subject, customer_key
from shared.events import DEFAULT_TENANT, EmotionAnalysis, utcnow

IDENTITY_KINDS = ("phone", "whatsapp", "email", "web", "sms", "voice")
"""Prefixes of channel identities (`phone:447700900123`); anything else is the tenant's own id."""

_RELATED_CATEGORIES = {
    "delivery_lost": ("delivery_lost", "delivery_delay"),
    "delivery_delay": ("delivery_lost", "delivery_delay"),
}
SEMANTIC_DUPLICATE = 0.9
"""Cosine above which a new preference restates an old one in other words."""


def identity_kind(identity: str) -> str:
    """`phone` for `phone:4477...`; `customer` for a tenant's own customer id."""
    prefix, sep, _ = identity.partition(":")
    return prefix if sep and prefix in IDENTITY_KINDS else "customer"


ErasureHook = Callable[[Any, list[str], list[str]], Awaitable[None]]
"""Runs in the erasure's transaction with (connection, identities, conversation ids)."""


@dataclass(frozen=True)
class TurnFacts:
    """The parts of a customer turn that learning needs."""

    customer_id: str
    conversation_id: str
    turn_id: uuid.UUID
    at: datetime
    emotion: EmotionAnalysis
    channel: str = "unknown"
    """The channel the turn arrived on: provenance for everything learned from it."""
    tenant: str = DEFAULT_TENANT
    """The tenant the customer belongs to (the event envelope's, as the edge verified it)."""


class CustomerStore:
    """Reads and writes the customer model."""

    def __init__(
        self,
        pg: Pool,
        redis: aioredis.Redis,
        embedder: Embedder,
        *,
        key_prefix: str,
        identity_ttl_s: int = 3600,
    ) -> None:
        self.pg = pg
        self.redis = redis
        self.embedder = embedder
        self.key_prefix = key_prefix
        self.identity_ttl_s = identity_ttl_s
        self.receipts = Receipts(RECEIPTS, ERASURE_LOCK)

    def _identity_key(self, tenant: str, identity: str) -> str:
        # Tenant ids and identities never hold "/" (the envelope's Identifier), so the key is
        # unambiguous; the default tenant keeps the key it had before tenants.
        scope = "" if tenant == DEFAULT_TENANT else f"{tenant}/"
        return f"{self.key_prefix}mem:identity:{scope}{identity}"

    async def resolve(
        self, identity: str, *, tenant: str = DEFAULT_TENANT, subject: Subject | None = None
    ) -> str:
        """The tenant's customer this channel identity belongs to, created on first contact.

        With `subject` (the turn that asks), a first contact that is in fact a turn of an
        erased customer, arriving after the erasure, creates nothing and raises `LateRecord`.
        """
        cached = await self.redis.get(self._identity_key(tenant, identity))
        if cached:
            return cached.decode() if isinstance(cached, bytes) else str(cached)
        async with self.pg.acquire() as conn:
            customer = await conn.fetchval(
                "SELECT customer_id FROM memory.identities WHERE tenant = $1 AND identity = $2",
                tenant,
                identity,
            )
            if customer is None:
                async with conn.transaction():
                    if subject is not None and await self.receipts.check(
                        conn, subject, "memory.customers"
                    ):
                        raise LateRecord("memory.customers")
                    await conn.execute(
                        "INSERT INTO memory.customers (tenant, customer_id) VALUES ($1, $2) "
                        "ON CONFLICT (tenant, customer_id) DO NOTHING",
                        tenant,
                        identity,
                    )
                    await conn.execute(
                        "INSERT INTO memory.identities (tenant, identity, customer_id, kind) "
                        "VALUES ($1, $2, $2, $3) ON CONFLICT (tenant, identity) DO NOTHING",
                        tenant,
                        identity,
                        identity_kind(identity),
                    )
                    customer = await conn.fetchval(
                        "SELECT customer_id FROM memory.identities "
                        "WHERE tenant = $1 AND identity = $2",
                        tenant,
                        identity,
                    )
        await self.redis.set(self._identity_key(tenant, identity), customer, ex=self.identity_ttl_s)
        return str(customer)

    async def link(
        self,
        customer_id: str,
        identity: str,
        *,
        verified: bool = True,
        tenant: str = DEFAULT_TENANT,
    ) -> str | None:
        """Make `identity` resolve to `customer_id`; return the customer merged away, if any.

        A phone number that wrote in before it was known becomes a customer of its own; linking
        it merges that customer's history into the known one, so nothing learned is lost.
        """
        merged: str | None = None
        async with self.pg.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO memory.customers (tenant, customer_id) VALUES ($1, $2) "
                "ON CONFLICT (tenant, customer_id) DO NOTHING",
                tenant,
                customer_id,
            )
            previous = await conn.fetchval(
                "SELECT customer_id FROM memory.identities "
                "WHERE tenant = $1 AND identity = $2 FOR UPDATE",
                tenant,
                identity,
            )
            if previous is not None and previous != customer_id:
                await _merge(conn, tenant, previous, customer_id)
                merged = str(previous)
            await conn.execute(
                """
                INSERT INTO memory.identities (tenant, identity, customer_id, kind, verified)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (tenant, identity) DO UPDATE
                SET customer_id = EXCLUDED.customer_id, verified = EXCLUDED.verified
                """,
                tenant,
                identity,
                customer_id,
                identity_kind(identity),
                verified,
            )
        await self.redis.delete(self._identity_key(tenant, identity))
        return merged

    async def update_profile(
        self, customer_id: str, fields: dict[str, Any], *, tenant: str = DEFAULT_TENANT
    ) -> None:
        """Set profile fields (name, preferred_name, language, tier, lifetime_value, consent)."""
        allowed = ("name", "preferred_name", "language", "tier", "lifetime_value", "consent")
        values = [fields.get(name) for name in allowed]
        present = [name in fields for name in allowed]
        await self.pg.execute(
            """
            INSERT INTO memory.customers (tenant, customer_id) VALUES ($1, $2)
            ON CONFLICT (tenant, customer_id) DO NOTHING
            """,
            tenant,
            customer_id,
        )
        await self.pg.execute(
            """
            UPDATE memory.customers SET
                name = CASE WHEN $8 THEN $2 ELSE name END,
                preferred_name = CASE WHEN $9 THEN $3 ELSE preferred_name END,
                language = CASE WHEN $10 THEN $4 ELSE language END,
                tier = CASE WHEN $11 THEN $5 ELSE tier END,
                lifetime_value = CASE WHEN $12 THEN $6::numeric ELSE lifetime_value END,
                consent = CASE WHEN $13 THEN consent || $7::jsonb ELSE consent END,
                updated_at = now()
            WHERE customer_id = $1 AND tenant = $14
            """,
            customer_id,
            *values[:6],
            *present,
            tenant,
        )

    async def crm_due(
        self, customer_id: str, interval_s: float, *, tenant: str = DEFAULT_TENANT
    ) -> bool:
        """True when the CRM has not been asked about this customer within `interval_s`."""
        synced = await self.pg.fetchval(
            "SELECT crm_synced_at > now() - make_interval(secs => $3) "
            "FROM memory.customers WHERE tenant = $1 AND customer_id = $2",
            tenant,
            customer_id,
            float(interval_s),
        )
        return not synced

    async def record_crm(
        self,
        customer_id: str,
        *,
        tier: str | None,
        lifetime_value: float | None,
        purchase_summary: str | None,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """Keep what the CRM said (a fact it did not give keeps its earlier value) and when.

        A sync still running when its customer was erased does not bring the profile back:
        with an erasure receipt for the customer, only a profile that exists again (they
        came back) is updated.
        """
        async with self.pg.acquire() as conn, conn.transaction():
            await self.receipts.share(conn)
            kept = await conn.fetchval(
                f"""
                INSERT INTO memory.customers AS c
                    (tenant, customer_id, tier, lifetime_value, purchase_summary, crm_synced_at)
                SELECT $1, $2, $3, $4::numeric, $5, now()
                WHERE EXISTS (
                        SELECT 1 FROM memory.customers WHERE tenant = $1 AND customer_id = $2)
                    OR NOT EXISTS (SELECT 1 FROM {RECEIPTS} WHERE key = $6)
                ON CONFLICT (tenant, customer_id) DO UPDATE SET
                    tier = COALESCE(EXCLUDED.tier, c.tier),
                    lifetime_value = COALESCE(EXCLUDED.lifetime_value, c.lifetime_value),
                    purchase_summary = COALESCE(EXCLUDED.purchase_summary, c.purchase_summary),
                    crm_synced_at = now(),
                    updated_at = now()
                RETURNING true
                """,  # noqa: S608 (the table name is a constant)
                tenant,
                customer_id,
                tier,
                lifetime_value,
                purchase_summary,
                customer_key(tenant, customer_id),
            )
        if not kept:
            LATE.labels("memory.customers").inc()

    async def crm_asked(self, customer_id: str, *, tenant: str = DEFAULT_TENANT) -> None:
        """Note that the CRM was asked (and knew nothing): not asked again until it is due."""
        await self.pg.execute(
            "UPDATE memory.customers SET crm_synced_at = now() "
            "WHERE tenant = $1 AND customer_id = $2",
            tenant,
            customer_id,
        )

    async def personalisation_allowed(
        self, customer_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> bool:
        """False when the customer withdrew consent to being remembered."""
        consent = await self.pg.fetchval(
            "SELECT consent FROM memory.customers WHERE tenant = $1 AND customer_id = $2",
            tenant,
            customer_id,
        )
        return not (isinstance(consent, dict) and consent.get("personalisation") is False)

    async def fold_mood(self, turn: TurnFacts) -> None:
        """Add this turn's emotion to its conversation's emotional record."""
        label = turn.emotion.label.value
        await self.pg.execute(
            """
            INSERT INTO memory.conversation_moods AS m (conversation_id, customer_id, turns,
                sentiment_sum, min_sentiment, last_sentiment, last_label, labels,
                started_at, updated_at, tenant)
            VALUES ($1, $2, 1, $3, $3, $3, $4, jsonb_build_object($4::text, 1), $5, $5, $6)
            ON CONFLICT (conversation_id) DO UPDATE SET
                turns = m.turns + 1,
                sentiment_sum = m.sentiment_sum + EXCLUDED.sentiment_sum,
                min_sentiment = LEAST(m.min_sentiment, EXCLUDED.min_sentiment),
                last_sentiment = EXCLUDED.last_sentiment,
                last_label = EXCLUDED.last_label,
                labels = m.labels || jsonb_build_object(
                    $4::text, COALESCE((m.labels ->> $4::text)::int, 0) + 1),
                updated_at = GREATEST(m.updated_at, EXCLUDED.updated_at)
            WHERE m.tenant = EXCLUDED.tenant
            """,
            turn.conversation_id,
            turn.customer_id,
            turn.emotion.sentiment,
            label,
            turn.at,
            turn.tenant,
        )

    async def learn(
        self, turn: TurnFacts, found: Extraction, *, allow_memories: bool = True
    ) -> list[uuid.UUID]:
        """Store what a message taught; return the ids of the memories written."""
        written: list[uuid.UUID] = []
        memories = found.memories if allow_memories else []
        vectors = self.embedder.embed([m.text for m in memories]) if memories else None
        async with self.pg.acquire() as conn, conn.transaction():
            for change in found.profile if allow_memories else []:
                await conn.execute(
                    """
                    UPDATE memory.customers SET
                        name = CASE WHEN $2 = 'name' THEN $3 ELSE name END,
                        preferred_name = CASE WHEN $2 = 'preferred_name' THEN $3
                                              ELSE preferred_name END,
                        language = CASE WHEN $2 = 'language' THEN $3 ELSE language END,
                        updated_at = now()
                    WHERE customer_id = $1 AND tenant = $4
                    """,
                    turn.customer_id,
                    change.field,
                    change.value,
                    turn.tenant,
                )
            for i, memory in enumerate(memories):
                assert vectors is not None
                written.append(await self._upsert_memory(conn, turn, memory, vectors[i]))
            for issue in found.raised:
                await self._raise_issue(conn, turn, issue)
            for resolved in found.resolved:
                await self._resolve_issue(conn, turn, resolved)
        return written

    async def _upsert_memory(
        self, conn: Any, turn: TurnFacts, memory: Learned, vector: npt.NDArray[np.float32]
    ) -> uuid.UUID:
        embedding = to_pgvector(vector)
        slot = memory.slot
        exists = await conn.fetchval(
            "SELECT true FROM memory.memories WHERE tenant = $3 AND customer_id = $1 AND slot = $2",
            turn.customer_id,
            slot,
            turn.tenant,
        )
        if not exists and memory.kind.value == "preference":
            # "I love eco stuff" after "I prefer green products": the same preference again.
            near = await conn.fetchrow(
                """
                SELECT slot, 1 - (embedding <=> $2::text::vector) AS similarity
                FROM memory.memories
                WHERE tenant = $3 AND customer_id = $1 AND kind = 'preference'
                ORDER BY embedding <=> $2::text::vector LIMIT 1
                """,
                turn.customer_id,
                embedding,
                turn.tenant,
            )
            if near is not None and near["similarity"] >= SEMANTIC_DUPLICATE:
                slot = near["slot"]
        memory_id: uuid.UUID = await conn.fetchval(
            """
            INSERT INTO memory.memories (memory_id, customer_id, kind, slot, text, confidence,
                source_turn_id, source_conversation_id, extractor, learned_at, updated_at,
                embedding, source_channel, tenant)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11::text::vector, $12, $13)
            ON CONFLICT (tenant, customer_id, slot) DO UPDATE SET
                kind = EXCLUDED.kind, text = EXCLUDED.text, confidence = EXCLUDED.confidence,
                source_turn_id = EXCLUDED.source_turn_id,
                source_conversation_id = EXCLUDED.source_conversation_id,
                extractor = EXCLUDED.extractor, updated_at = EXCLUDED.updated_at,
                embedding = EXCLUDED.embedding, source_channel = EXCLUDED.source_channel
            RETURNING memory_id
            """,
            uuid.uuid5(turn.turn_id, slot),
            turn.customer_id,
            memory.kind.value,
            slot,
            memory.text,
            memory.confidence,
            turn.turn_id,
            turn.conversation_id,
            memory.extractor,
            turn.at,
            embedding,
            turn.channel,
            turn.tenant,
        )
        return memory_id

    async def _raise_issue(self, conn: Any, turn: TurnFacts, issue: IssueRaised) -> None:
        await conn.execute(
            """
            INSERT INTO memory.issues (issue_id, customer_id, conversation_id, category, summary,
                source_turn_id, opened_at, updated_at, source_channel, extractor, tenant)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10)
            ON CONFLICT (tenant, customer_id, category) WHERE status <> 'resolved' DO UPDATE SET
                summary = EXCLUDED.summary, updated_at = EXCLUDED.updated_at
            """,
            uuid.uuid5(turn.turn_id, issue.category),
            turn.customer_id,
            turn.conversation_id,
            issue.category,
            issue.summary,
            turn.turn_id,
            turn.at,
            turn.channel,
            issue.extractor,
            turn.tenant,
        )

    async def _resolve_issue(self, conn: Any, turn: TurnFacts, resolved: IssueResolved) -> None:
        categories = (
            list(_RELATED_CATEGORIES.get(resolved.category, (resolved.category,)))
            if resolved.category
            else None
        )
        await conn.execute(
            """
            UPDATE memory.issues SET status = 'resolved', resolved_at = $3, updated_at = $3
            WHERE issue_id IN (
                SELECT issue_id FROM memory.issues
                WHERE tenant = $5 AND customer_id = $1 AND status <> 'resolved'
                  AND ($2::text[] IS NULL OR category = ANY($2::text[]))
                ORDER BY (conversation_id = $4) DESC, updated_at DESC
                LIMIT CASE WHEN $2::text[] IS NULL THEN 1 ELSE 100 END)
            """,
            turn.customer_id,
            categories,
            turn.at,
            turn.conversation_id,
            turn.tenant,
        )

    async def set_issue_status(
        self,
        customer_id: str,
        issue_id: uuid.UUID,
        status: str,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> bool:
        """Agents and CRMs close or reopen issues; False if the customer has no such issue."""
        done = await self.pg.fetchval(
            """
            UPDATE memory.issues SET status = $3, updated_at = now(),
                resolved_at = CASE WHEN $3 = 'resolved' THEN now() END
            WHERE tenant = $4 AND customer_id = $1 AND issue_id = $2 RETURNING true
            """,
            customer_id,
            issue_id,
            status,
            tenant,
        )
        return bool(done)

    async def forget(
        self, customer_id: str, memory_id: uuid.UUID, *, tenant: str = DEFAULT_TENANT
    ) -> bool:
        """Delete one memory ("please forget my address"); False if there was none."""
        done = await self.pg.fetchval(
            "DELETE FROM memory.memories "
            "WHERE tenant = $3 AND customer_id = $1 AND memory_id = $2 RETURNING true",
            customer_id,
            memory_id,
            tenant,
        )
        return bool(done)

    async def export(
        self, customer_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> dict[str, Any] | None:
        """Everything memory holds about the customer, as plain JSON-ready data."""
        async with self.pg.acquire() as conn, conn.transaction(readonly=True):
            profile = await conn.fetchrow(
                "SELECT * FROM memory.customers WHERE tenant = $1 AND customer_id = $2",
                tenant,
                customer_id,
            )
            if profile is None:
                return None
            queries = {
                "identities": "SELECT identity, kind, verified, created_at FROM memory.identities "
                "WHERE tenant = $1 AND customer_id = $2 ORDER BY created_at",
                "conversations": "SELECT * FROM memory.conversations "
                "WHERE tenant = $1 AND customer_id = $2 ORDER BY started_at",
                "turns": "SELECT turn_key, conversation_id, role, text, channel, in_reply_to, "
                "emotion, occurred_at FROM memory.turns WHERE tenant = $1 AND customer_id = $2 "
                "ORDER BY occurred_at",
                "memories": "SELECT memory_id, kind, slot, text, confidence, source_turn_id, "
                "source_conversation_id, extractor, learned_at, updated_at, "
                "vector_dims(embedding) AS embedding_dimensions FROM memory.memories "
                "WHERE tenant = $1 AND customer_id = $2 ORDER BY learned_at",
                "issues": "SELECT * FROM memory.issues WHERE tenant = $1 AND customer_id = $2 "
                "ORDER BY opened_at",
                "emotional_history": "SELECT * FROM memory.conversation_moods "
                "WHERE tenant = $1 AND customer_id = $2 ORDER BY started_at",
            }
            data: dict[str, Any] = {"profile": _plain(dict(profile))}
            for name, sql in queries.items():
                data[name] = [_plain(dict(r)) for r in await conn.fetch(sql, tenant, customer_id)]
        return data

    async def erase(
        self,
        customer_id: str,
        record: ErasureHook | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> tuple[list[str], list[str]] | None:
        """Delete the customer everywhere memory keeps them; (identities, conversation ids).

        `record(conn, identities, conversations)` runs inside the deleting transaction, so
        what must follow the erasure (its event, its receipt) commits with it or not at all.
        So do the erasure receipts that a turn still in flight is checked against
        (`shared.erasure.Receipts`): it stores nothing when it arrives.
        """
        async with self.pg.acquire() as conn, conn.transaction():
            # Before anything is read: a turn being stored now commits first and is erased.
            await self.receipts.hold(conn)
            found = await conn.fetchval(
                "SELECT true FROM memory.customers WHERE tenant = $1 AND customer_id = $2 "
                "FOR UPDATE",
                tenant,
                customer_id,
            )
            if not found:
                return None
            identities = [
                r["identity"]
                for r in await conn.fetch(
                    "SELECT identity FROM memory.identities WHERE tenant = $1 AND customer_id = $2",
                    tenant,
                    customer_id,
                )
            ]
            conversations = [
                r["conversation_id"]
                for r in await conn.fetch(
                    "SELECT conversation_id FROM memory.conversations "
                    "WHERE tenant = $1 AND customer_id = $2 "
                    "UNION SELECT conversation_id FROM memory.conversation_moods "
                    "WHERE tenant = $1 AND customer_id = $2",
                    tenant,
                    customer_id,
                )
            ]
            await conn.execute(
                "DELETE FROM memory.turns WHERE tenant = $1 "
                "AND (customer_id = $2 OR conversation_id = ANY($3))",
                tenant,
                customer_id,
                conversations,
            )
            await conn.execute(
                "DELETE FROM memory.conversations WHERE tenant = $1 AND customer_id = $2",
                tenant,
                customer_id,
            )
            # memories (and their embeddings), issues, moods and identities cascade.
            await conn.execute(
                "DELETE FROM memory.customers WHERE tenant = $1 AND customer_id = $2",
                tenant,
                customer_id,
            )
            await self.receipts.record(
                conn,
                tenant=tenant,
                customers={*identities, customer_id},
                conversations=conversations,
                erased_at=utcnow(),
            )
            if record is not None:
                await record(conn, sorted({*identities, customer_id}), conversations)
        keys = [self._identity_key(tenant, i) for i in {*identities, customer_id}]
        keys += [conversation_key(self.key_prefix, tenant, c) for c in conversations]
        keys += [meaning_key(self.key_prefix, tenant, c) for c in conversations]
        if keys:
            await self.redis.delete(*keys)
        return sorted({*identities, customer_id}), conversations


_MOVE_TO_CUSTOMER = tuple(
    f"UPDATE memory.{table} SET customer_id = $3 WHERE tenant = $1 AND customer_id = $2"  # noqa: S608 (fixed names)
    for table in (
        "memories", "issues", "conversation_moods", "conversations", "turns", "identities"
    )
)  # fmt: skip


async def _merge(conn: Any, tenant: str, source: str, target: str) -> None:
    """Move everything of the tenant's customer `source` to `target`, then delete `source`."""
    # One value per slot: the newer statement wins, as it would have on the same channel.
    await conn.execute(
        """
        DELETE FROM memory.memories older USING memory.memories newer
        WHERE older.tenant = $3 AND newer.tenant = $3
          AND older.slot = newer.slot AND older.memory_id <> newer.memory_id
          AND (older.updated_at < newer.updated_at
            OR (older.updated_at = newer.updated_at AND older.customer_id = $1))
          AND ((older.customer_id = $1 AND newer.customer_id = $2)
            OR (older.customer_id = $2 AND newer.customer_id = $1))
        """,
        source,
        target,
        tenant,
    )
    await conn.execute(
        """
        UPDATE memory.issues SET status = 'resolved', resolved_at = now()
        WHERE tenant = $3 AND customer_id = $1 AND status <> 'resolved' AND category IN (
            SELECT category FROM memory.issues
            WHERE tenant = $3 AND customer_id = $2 AND status <> 'resolved')
        """,
        source,
        target,
        tenant,
    )
    for statement in _MOVE_TO_CUSTOMER:
        await conn.execute(statement, tenant, source, target)
    await conn.execute(
        "DELETE FROM memory.customers WHERE tenant = $1 AND customer_id = $2", tenant, source
    )


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, uuid.UUID):
            out[key] = str(value)
        elif value is not None and type(value).__name__ == "Decimal":
            out[key] = float(value)
        else:
            out[key] = value
    return out
