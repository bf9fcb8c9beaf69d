"""Context assembly: what the reply to this turn should know, within a token budget.

One round trip to PostgreSQL fetches the profile, the memories nearest to the message (pgvector
cosine distance over this customer's memories only), unresolved issues and past conversations'
moods; the recent turns come from the hot cache. Sections are then admitted in order of how much
a caring reply needs them until the budget is spent: profile, open issues, relevant memories,
emotional history, and as many recent turns as still fit, newest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from services.memory.turns import ContextSource
from shared.db import Pool
from shared.embedding import to_pgvector
from shared.events import (
    DEFAULT_TENANT,
    ConversationContext,
    CustomerProfile,
    HistoryTurn,
    MemoryItem,
    MemoryKind,
    OpenIssue,
)

# Every part is read within the customer's tenant ($6): another tenant's customer with the
# same id is someone else.
_CONTEXT_SQL = """
SELECT
    (SELECT to_jsonb(c) - 'first_seen_at' - 'last_seen_at' - 'updated_at' - 'tenant'
            - 'crm_synced_at'
     FROM memory.customers c WHERE c.tenant = $6 AND c.customer_id = $1) AS profile,
    (SELECT COALESCE(array_agg(identity ORDER BY identity), '{}')
     FROM memory.identities WHERE tenant = $6 AND customer_id = $1) AS channels,
    (SELECT count(*) FROM memory.conversations
     WHERE tenant = $6 AND customer_id = $1) AS conversations,
    (SELECT COALESCE(jsonb_agg(m ORDER BY m.distance), '[]'::jsonb) FROM (
        SELECT memory_id, kind, slot, text, confidence, source_turn_id, learned_at,
               embedding <=> $2::text::vector AS distance
        FROM memory.memories WHERE tenant = $6 AND customer_id = $1 AND $5
        ORDER BY distance LIMIT $3) m) AS memories,
    (SELECT COALESCE(jsonb_agg(i ORDER BY i.updated_at DESC), '[]'::jsonb) FROM (
        SELECT issue_id, category, summary, status, conversation_id, opened_at, updated_at
        FROM memory.issues WHERE tenant = $6 AND customer_id = $1 AND status <> 'resolved'
        ORDER BY updated_at DESC LIMIT 5) i) AS issues,
    (SELECT COALESCE(jsonb_agg(h ORDER BY h.updated_at DESC), '[]'::jsonb) FROM (
        SELECT conversation_id, turns, sentiment_sum, min_sentiment, last_sentiment,
               last_label, labels, started_at, updated_at
        FROM memory.conversation_moods
        WHERE tenant = $6 AND customer_id = $1 AND conversation_id <> $4
        ORDER BY updated_at DESC LIMIT 5) h) AS moods
"""


def estimate_tokens(text: str) -> int:
    """A cheap, tokenizer-free estimate (about four characters per token in English)."""
    return math.ceil(len(text) / 4) if text else 0


@dataclass(frozen=True)
class ContextLimits:
    """How much context a turn may carry."""

    token_budget: int = 700
    recall_k: int = 3
    """Memories always offered for the message (the most similar ones)."""
    extra_k: int = 2
    """Further memories offered when they clear `min_relevance`."""
    min_relevance: float = 0.35


class ContextAssembler:
    """Builds a turn's `ConversationContext` from the customer model and the hot cache."""

    def __init__(self, pg: Pool, limits: ContextLimits | None = None) -> None:
        self.pg = pg
        self.limits = limits or ContextLimits()

    async def fetch(
        self,
        customer_id: str,
        conversation_id: str,
        vector: npt.NDArray[np.float32],
        *,
        recall: bool = True,
        tenant: str = DEFAULT_TENANT,
    ) -> dict[str, Any]:
        """The raw rows for the context, in one query, within the customer's tenant."""
        row = await self.pg.fetchrow(
            _CONTEXT_SQL,
            customer_id,
            to_pgvector(vector),
            self.limits.recall_k + self.limits.extra_k,
            conversation_id,
            recall,
            tenant,
        )
        assert row is not None
        return dict(row)

    def build(
        self,
        rows: dict[str, Any],
        *,
        recent: list[HistoryTurn],
        source: ContextSource,
        now: datetime,
    ) -> ConversationContext:
        """Admit sections in priority order until the token budget is spent."""
        budget = self.limits.token_budget
        used = 0

        def fits(text: str) -> bool:
            nonlocal used
            cost = estimate_tokens(text)
            if used + cost > budget:
                return False
            used += cost
            return True

        profile = _profile(rows)
        if profile is not None:
            fits(profile.model_dump_json(exclude_defaults=True))
        issues = [
            issue
            for issue in (OpenIssue.model_validate(i) for i in rows["issues"])
            if fits(issue.summary + issue.category)
        ]
        memories: list[MemoryItem] = []
        for rank, raw in enumerate(rows["memories"]):
            fields = {k: v for k, v in raw.items() if k != "distance"}
            relevance = round(1.0 - float(raw["distance"]), 4)
            item = MemoryItem.model_validate({**fields, "relevance": relevance})
            wanted = (
                rank < self.limits.recall_k
                or relevance >= self.limits.min_relevance
                or item.kind is MemoryKind.CONSTRAINT
            )
            if wanted and fits(item.text):
                memories.append(item)
        history = summarise_moods(rows["moods"], now)
        if history and not fits(history):
            history = ""
        kept: list[HistoryTurn] = []
        for turn in reversed(recent):
            if not fits(turn.text):
                break
            kept.append(turn)
        kept.reverse()
        return ConversationContext(
            recent_turns=kept,
            memories_used=[str(m.memory_id) for m in memories],
            customer_tier=profile.tier if profile else None,
            source=source,
            profile=profile,
            memories=memories,
            open_issues=issues,
            emotional_history=history,
            token_estimate=used,
        )


def _profile(rows: dict[str, Any]) -> CustomerProfile | None:
    raw = rows["profile"]
    if not raw:
        return None
    value = raw.get("lifetime_value")
    return CustomerProfile(
        customer_id=raw["customer_id"],
        name=raw.get("name"),
        preferred_name=raw.get("preferred_name"),
        language=raw.get("language"),
        tier=raw.get("tier"),
        lifetime_value=float(value) if value is not None else None,
        purchase_summary=raw.get("purchase_summary"),
        consent={k: bool(v) for k, v in (raw.get("consent") or {}).items()},
        channels=list(rows["channels"] or []),
        conversations=int(rows["conversations"] or 0),
    )


def _ago(then: datetime, now: datetime) -> str:
    days = (now - then).days
    if days <= 0:
        return "earlier today"
    if days == 1:
        return "yesterday"
    if days < 14:
        return f"{days} days ago"
    return f"{days // 7} weeks ago"


def _mood_word(sentiment: float) -> str:
    if sentiment <= -0.35:
        return "negative"
    if sentiment < -0.1:
        return "somewhat negative"
    if sentiment >= 0.35:
        return "positive"
    if sentiment > 0.1:
        return "somewhat positive"
    return "neutral"


def summarise_moods(moods: list[dict[str, Any]], now: datetime) -> str:
    """One or two sentences on how the customer's past conversations felt."""
    if not moods:
        return ""
    last = moods[0]
    labels: dict[str, int] = last.get("labels") or {}
    feelings = [
        name for name, _ in sorted(labels.items(), key=lambda kv: -kv[1]) if name != "neutral"
    ]
    turns = max(int(last["turns"]), 1)
    average = float(last["sentiment_sum"]) / turns
    updated = datetime.fromisoformat(last["updated_at"])
    text = (
        f"{len(moods)} earlier conversation{'s' if len(moods) > 1 else ''}. "
        f"The last one ({_ago(updated, now)}) was {_mood_word(average)} overall"
    )
    if feelings:
        text += f", mostly {' and '.join(feelings[:2])}"
    text += f", and ended {_mood_word(float(last['last_sentiment']))}."
    negative = sum(1 for m in moods if float(m["sentiment_sum"]) / max(int(m["turns"]), 1) <= -0.35)
    if len(moods) > 1 and negative:
        text += f" {negative} of the last {len(moods)} were negative."
    return text
