"""The handoff packet: what an agent needs to take over without making the customer repeat."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.escalation.desk import Ticket
from shared.db import Pool

MAX_TURNS = 200


async def build_packet(pg: Pool, ticket: Ticket) -> dict[str, Any]:
    """Summary, intent, emotion timeline, what was tried, the customer, the transcript.

    The transcript is memory's record (read, never written, here), so the agent sees exactly
    what the customer saw, bot replies included.
    """
    rows = await pg.fetch(
        """
        SELECT role, text, occurred_at, emotion FROM memory.turns
        WHERE tenant = $3 AND conversation_id = $1 ORDER BY occurred_at LIMIT $2
        """,
        ticket.conversation_id,
        MAX_TURNS,
        ticket.tenant,
    )
    transcript = [
        {
            "role": r["role"],
            "text": r["text"],
            "at": r["occurred_at"].isoformat(),
            "emotion": r["emotion"],
        }
        for r in rows
    ]
    customer_turns = [t for t in transcript if t["role"] == "customer"]
    timeline = [
        {
            "at": t["at"],
            "label": t["emotion"].get("label"),
            "sentiment": t["emotion"].get("sentiment"),
            "intensity": t["emotion"].get("intensity"),
        }
        for t in customer_turns
        if isinstance(t["emotion"], dict)
    ]
    tried = [_clip(t["text"], 200) for t in transcript if t["role"] in ("bot", "agent")]
    first = customer_turns[0]["text"] if customer_turns else ""
    latest = customer_turns[-1]["text"] if customer_turns else ""
    feelings = [p["label"] for p in timeline if p["label"] and p["label"] != "neutral"]
    summary = (
        f"{len(customer_turns)} customer message(s), {len(tried)} repl(ies) so far. "
        f"Escalated for: {', '.join(r['code'].replace('_', ' ') for r in ticket.reasons)}. "
        + (f"Feelings shown: {', '.join(dict.fromkeys(feelings))}. " if feelings else "")
        + f"Latest: \u201c{_clip(latest, 160)}\u201d"
    )
    return {
        "summary": summary,
        "intent": _clip(first, 240),
        "reasons": ticket.reasons,
        "emotion_timeline": timeline,
        "tried": tried,
        "customer": await _customer(pg, ticket.tenant, ticket.customer_id),
        "transcript": transcript,
    }


async def _customer(pg: Pool, tenant: str, customer_id: str) -> dict[str, Any]:
    """Who the customer is and what the platform remembers, from memory's record.

    Read within the ticket's tenant: another tenant's customer with the same id is someone
    else, and an agent must never see them.
    """
    try:
        profile = await pg.fetchrow(
            """
            SELECT c.name, c.preferred_name, c.language, c.tier,
                   (SELECT string_agg(identity, ', ' ORDER BY identity)
                    FROM memory.identities
                    WHERE tenant = c.tenant AND customer_id = c.customer_id) AS channels,
                   (SELECT count(*) FROM memory.conversations
                    WHERE tenant = c.tenant AND customer_id = c.customer_id) AS conversations
            FROM memory.customers c WHERE c.tenant = $2 AND c.customer_id = $1
            """,
            customer_id,
            tenant,
        )
        memories = await pg.fetch(
            "SELECT text FROM memory.memories WHERE tenant = $2 AND customer_id = $1 "
            "ORDER BY kind = 'constraint' DESC, confidence DESC, updated_at DESC LIMIT 20",
            customer_id,
            tenant,
        )
        issues = await pg.fetch(
            "SELECT category, summary, status, opened_at FROM memory.issues "
            "WHERE tenant = $2 AND customer_id = $1 AND status <> 'resolved' "
            "ORDER BY updated_at DESC LIMIT 5",
            customer_id,
            tenant,
        )
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        profile, memories, issues = None, [], []
    labels = {
        "name": "Name",
        "preferred_name": "Likes to be called",
        "language": "Language",
        "tier": "Tier",
        "channels": "Reached us as",
        "conversations": "Conversations",
    }
    shown = {
        labels[k]: str(v)
        for k, v in (dict(profile) if profile else {}).items()
        if v not in (None, "")
    }
    open_issues = [
        {
            "category": r["category"],
            "summary": r["summary"],
            "status": r["status"],
            "opened_at": r["opened_at"].isoformat(),
        }
        for r in issues
    ]
    return {
        "customer_id": customer_id,
        "profile": shown,
        "memories": [
            *(
                f"Open issue ({i['category'].replace('_', ' ')}): {i['summary']}"
                for i in open_issues
            ),
            *(r["text"] for r in memories),
        ],
        "open_issues": open_issues,
    }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
