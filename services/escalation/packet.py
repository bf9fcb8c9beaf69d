"""The handoff packet: what an agent needs to take over without making the customer repeat."""

from __future__ import annotations

from typing import Any

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
        WHERE conversation_id = $1 ORDER BY occurred_at LIMIT $2
        """,
        ticket.conversation_id,
        MAX_TURNS,
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
        "customer": {"customer_id": ticket.customer_id, "profile": {}, "memories": []},
        "transcript": transcript,
    }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
