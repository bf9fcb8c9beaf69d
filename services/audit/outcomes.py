"""Outcomes: how each conversation ends, and what that says about the variant that served it.

Built from events only (turn.routed, reply.generated, feedback.received, conversation.closed),
into `care.conversations`:

- **containment**: closed without a ticket ever being opened;
- **first-contact resolution (FCR)**: closed resolved (no "unresolved" disposition) and the
  customer did not come back about the same issue category within `fcr_window_days`. A repeat
  contact settles it as not-FCR at once; the window passing settles it as FCR (the sweeper);
- **repeat contacts**: a later conversation of the same customer touching an issue category an
  earlier, closed conversation touched, within the window.

An issue counts as touched by a conversation when memory's context for one of its turns lists
the issue as updated since the conversation started (memory opens an issue at the turn that
raises it, and updates the open one of the same category when it is raised again). A customer
writing again in a closed conversation reopens it; that is a repeat contact only when the new
turn touches one of the issues the closed conversation touched.

Every handler is idempotent: each counts only on the row change it made, so a redelivered event
changes nothing and counts nothing. Times come from the events (and the sweeper's `now`), so
tests drive a fake clock.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Histogram

from services.audit.care_settings import CareSettings
from shared import db
from shared.erasure import Receipts, Subject
from shared.events import (
    Channel,
    CloseReason,
    ConversationClosed,
    ConversationClosedEvent,
    CustomerErasedEvent,
    FeedbackReceivedEvent,
    ReplyGeneratedEvent,
    Role,
    TurnRoutedEvent,
    new_trace_id,
)
from shared.kafka import EventBus

log = logging.getLogger(__name__)

LABELS = ["variant", "channel", "playbook", "agent"]

CLOSED = Counter(
    "cbd_conversations_closed_total",
    "Conversations closed, by how (reason) and whether no ticket was ever opened (contained).",
    [*LABELS, "reason", "contained"],
)
RESOLVED = Counter(
    "cbd_conversation_resolutions_total",
    "Conversations closed as resolved (candidates for first-contact resolution).",
    LABELS,
)
FCR = Counter(
    "cbd_first_contact_resolutions_total",
    "Resolved conversations with no repeat contact on the same issue within the FCR window.",
    LABELS,
)
REPEATS = Counter(
    "cbd_repeat_contacts_total",
    "Later contacts about an issue an earlier conversation touched, labelled by the earlier one.",
    LABELS,
)
CSAT = Counter(
    "cbd_care_csat_ratings_total",
    "CSAT ratings (1-5) by the variant, playbook and agent of the rated reply or conversation.",
    ["rating", *LABELS],
)
AGENT_BOT_RATINGS = Counter(
    "cbd_care_agent_bot_ratings_total",
    "Agents' 1-5 ratings of how the bot handled a conversation before the handoff, by the "
    "variant, channel and playbook of its bot replies and the agent who rated.",
    ["rating", *LABELS],
)
NPS = Counter(
    "cbd_care_nps_ratings_total",
    "NPS answers (0-10) by the variant, playbook and agent of the conversation.",
    ["score", *LABELS],
)
CONVERSATION_SECONDS = Histogram(
    "cbd_conversation_duration_seconds",
    "From a conversation's first turn to its last activity, at close.",
    ["variant", "channel"],
    buckets=(30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
)
REVIEW_QUEUED = Counter(
    "cbd_review_queue_items_total",
    "Bot replies queued for human review, by why (random, flagged, low_csat, escalated).",
    ["reason"],
)


CARE_RECEIPTS = Receipts("audit.erasure_receipts", "cbd_care_erasure")
"""Audit's erasure receipts (the ledger writes them too) under the care tables' own lock,
which every write of customer data to `care.*` holds shared."""


def label_values(row: Any) -> list[str]:
    """Metric label values from a conversation row ("none" where unknown)."""
    return [
        row["variant"] or "none",
        row["channel"] or "none",
        row["playbook"] or "none",
        row["agent_id"] or "none",
    ]


def sampled(reply_id: uuid.UUID, share: float) -> bool:
    """Whether a reply falls in the random review sample.

    A hash of the reply id, not `random()`: a redelivered reply gets the same answer.
    """
    digest = hashlib.sha256(reply_id.bytes).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


REASON_PRIORITY = {
    "low_csat": 4,
    "agent_low": 4,
    "flagged": 3,
    "escalated": 2,
    "random": 1,
    "scenario": 1,
}


@dataclass(frozen=True)
class Sweep:
    """What one pass of the sweeper did."""

    closed: int
    fcr_settled: int


class Outcomes:
    """The care loop's event handlers and its sweeper over `care.*`."""

    def __init__(self, pg: db.Pool, bus: EventBus | None, settings: CareSettings) -> None:
        self.pg = pg
        self.bus = bus
        self.settings = settings
        self.receipts = CARE_RECEIPTS

    # ---- events in -------------------------------------------------------------------------

    async def on_turn_routed(self, event: TurnRoutedEvent) -> None:
        """Track the conversation, keep what produced the reply, and spot repeat contacts."""
        turn = event.payload
        at = turn.message.received_at
        async with self.pg.acquire() as conn, conn.transaction():
            if await self.receipts.check(conn, Subject.of(event), "care.turns"):
                return  # about a customer erased before it arrived: nothing is kept
            row = await conn.fetchrow(
                """
                INSERT INTO care.conversations AS c
                    (conversation_id, customer_id, channel, started_at, last_activity_at, tenant)
                VALUES ($1, $2, $3, $4, $4, $5)
                ON CONFLICT (conversation_id) DO UPDATE SET
                    customer_id = EXCLUDED.customer_id,
                    last_activity_at = GREATEST(c.last_activity_at, EXCLUDED.last_activity_at)
                RETURNING *
                """,
                event.conversation_id,
                event.customer_id,
                event.channel.value,
                at,
                event.tenant,
            )
            assert row is not None  # an upsert with RETURNING always returns its row
            reopened = None
            if row["closed_at"] is not None and at > row["closed_at"]:
                reopened, row = row, await self._reopen(conn, row, at)
            inserted = await conn.fetchval(
                """
                INSERT INTO care.turns (turn_id, conversation_id, customer_id, message, emotion,
                    memories, open_issues, route, at, tenant)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT (turn_id) DO NOTHING RETURNING true
                """,
                turn.message.turn_id,
                event.conversation_id,
                event.customer_id,
                turn.message.text,
                turn.emotion.model_dump(
                    mode="json", include={"label", "sentiment", "intensity", "signals"}
                ),
                [{"kind": m.kind.value, "text": m.text} for m in turn.context.memories],
                [
                    {"category": i.category, "summary": i.summary, "status": i.status}
                    for i in turn.context.open_issues
                ],
                turn.route.model_dump(mode="json", include={"target", "reasons"}),
                at,
                event.tenant,
            )
            if not inserted:
                return  # a redelivery: everything below already happened
            touched = {
                issue.category
                for issue in turn.context.open_issues
                if issue.updated_at >= row["started_at"]
            }
            if reopened is not None and touched & set(reopened["issue_categories"]):
                await self._repeated_after_close(conn, reopened)
            new = sorted(touched - set(row["issue_categories"]))
            if new:
                await conn.execute(
                    "UPDATE care.conversations SET issue_categories = issue_categories || $2 "
                    "WHERE conversation_id = $1",
                    event.conversation_id,
                    new,
                )
                await self._repeat_contacts(conn, event.conversation_id, row, new, at)
            handoff = turn.route.handoff
            if handoff is not None:
                await conn.execute(
                    """
                    UPDATE care.conversations SET escalated = true, ticket_id = $2,
                        agent_id = COALESCE($3, agent_id)
                    WHERE conversation_id = $1
                    """,
                    event.conversation_id,
                    handoff.ticket_id,
                    handoff.agent_id,
                )
                if handoff.new:
                    # Every bot reply of a conversation that needed a person is worth a look.
                    replies = await conn.fetch(
                        "SELECT reply_id FROM care.replies "
                        "WHERE conversation_id = $1 AND author = 'bot'",
                        event.conversation_id,
                    )
                    for reply in replies:
                        await self._queue(conn, reply["reply_id"], "escalated")

    async def _reopen(self, conn: Any, row: Any, at: datetime) -> Any:
        """The customer wrote again after the close: the conversation starts afresh."""
        return await conn.fetchrow(
            """
            UPDATE care.conversations SET
                closed_at = NULL, close_requested_at = NULL, close_reason = NULL,
                disposition = NULL, fcr_candidate = NULL, escalated = false, ticket_id = NULL,
                started_at = $2, last_activity_at = $2, issue_categories = '{}'
            WHERE conversation_id = $1 RETURNING *
            """,
            row["conversation_id"],
            at,
        )

    async def _repeated_after_close(self, conn: Any, before: Any) -> None:
        """Back in the same conversation about the same issue: its close was no resolution.

        (A "thanks!" after the close touches no issue and changes nothing.)
        """
        if before["fcr_candidate"] and before["fcr"] is None:
            await conn.execute(
                "UPDATE care.conversations SET fcr = false, repeated_by = conversation_id "
                "WHERE conversation_id = $1",
                before["conversation_id"],
            )
        REPEATS.labels(*label_values(before)).inc()

    async def _repeat_contacts(
        self, conn: Any, conversation_id: str, row: Any, categories: list[str], at: datetime
    ) -> None:
        """Earlier closed conversations about these categories, within the window, are repeats."""
        earlier = await conn.fetch(
            """
            SELECT * FROM care.conversations
            WHERE tenant = $6 AND customer_id = $1 AND conversation_id <> $2
              AND closed_at IS NOT NULL
              AND closed_at >= $3 AND closed_at <= $4 AND issue_categories && $5
              AND repeated_by IS NULL
            ORDER BY closed_at DESC
            FOR UPDATE
            """,
            row["customer_id"],
            conversation_id,
            at - timedelta(days=self.settings.fcr_window_days),
            at,
            categories,
            row["tenant"],
        )
        for previous in earlier:
            await conn.execute(
                """
                UPDATE care.conversations SET repeated_by = $2,
                    fcr = CASE WHEN fcr_candidate AND fcr IS NULL THEN false ELSE fcr END
                WHERE conversation_id = $1
                """,
                previous["conversation_id"],
                conversation_id,
            )
            REPEATS.labels(*label_values(previous)).inc()
        if earlier:
            await conn.execute(
                "UPDATE care.conversations SET repeat_of = $2 WHERE conversation_id = $1",
                conversation_id,
                earlier[0]["conversation_id"],
            )

    async def on_reply_generated(self, event: ReplyGeneratedEvent) -> None:
        """Keep the reply (what produced it, for review) and the conversation's variant."""
        reply = event.payload
        at = event.occurred_at
        async with self.pg.acquire() as conn, conn.transaction():
            if await self.receipts.check(conn, Subject.of(event), "care.replies"):
                return  # about a customer erased before it arrived: nothing is kept
            inserted = await conn.fetchval(
                """
                INSERT INTO care.replies (reply_id, turn_id, conversation_id, customer_id,
                    channel, author, text, variant, playbook, knowledge_used, memories_used,
                    flags, at, tenant)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                ON CONFLICT (reply_id) DO NOTHING RETURNING true
                """,
                reply.reply_id,
                reply.turn_id,
                event.conversation_id,
                event.customer_id,
                event.channel.value,
                reply.author.value,
                reply.text,
                reply.variant,
                reply.playbook,
                reply.knowledge_used,
                reply.memories_used,
                reply.flags,
                at,
                event.tenant,
            )
            if not inserted:
                return
            bot = reply.author is Role.BOT
            await conn.execute(
                """
                INSERT INTO care.conversations AS c (conversation_id, customer_id, channel,
                    started_at, last_activity_at, variant, playbook, last_bot_reply_id, tenant)
                VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8)
                ON CONFLICT (conversation_id) DO UPDATE SET
                    last_activity_at = GREATEST(c.last_activity_at, EXCLUDED.last_activity_at),
                    variant = COALESCE(EXCLUDED.variant, c.variant),
                    playbook = COALESCE(EXCLUDED.playbook, c.playbook),
                    last_bot_reply_id = COALESCE(EXCLUDED.last_bot_reply_id, c.last_bot_reply_id)
                """,
                event.conversation_id,
                event.customer_id,
                event.channel.value,
                at,
                reply.variant if bot else None,
                reply.playbook if bot else None,
                reply.reply_id if bot else None,
                event.tenant,
            )
            if not bot:
                return
            if reply.flags:
                await self._queue(conn, reply.reply_id, "flagged")
            if sampled(reply.reply_id, self.settings.review_sample_share):
                await self._queue(conn, reply.reply_id, "random")

    async def on_feedback_received(self, event: FeedbackReceivedEvent) -> None:
        """Count the rating under its variant; a low one queues the rated reply for review.

        An agent's rating of the bot's part (source `agent`) is counted apart from customers'
        CSAT, under the conversation's bot variant and the rating agent.
        """
        fb = event.payload
        async with self.pg.acquire() as conn, conn.transaction():
            if await self.receipts.check(conn, Subject.of(event), "care.feedback"):
                return  # about a customer erased before it arrived: nothing is kept
            inserted = await conn.fetchval(
                """
                INSERT INTO care.feedback (event_id, conversation_id, customer_id, reply_id,
                    rating, nps, comment, at, tenant, source, agent_id, ticket_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                ON CONFLICT (event_id) DO NOTHING RETURNING true
                """,
                event.event_id,
                event.conversation_id,
                event.customer_id,
                fb.reply_id,
                fb.rating,
                fb.nps,
                fb.comment,
                event.occurred_at,
                event.tenant,
                fb.source,
                fb.agent_id,
                fb.ticket_id,
            )
            if not inserted:
                return
            conv = await conn.fetchrow(
                "SELECT * FROM care.conversations WHERE conversation_id = $1",
                event.conversation_id,
            )
            rated = None
            if fb.reply_id is not None:
                rated = await conn.fetchrow(
                    "SELECT reply_id, variant, playbook, author FROM care.replies "
                    "WHERE reply_id = $1",
                    fb.reply_id,
                )
            labels = {
                "variant": None,
                "channel": event.channel.value,
                "playbook": None,
                "agent_id": None,
            }
            if conv is not None:
                labels.update(
                    variant=conv["variant"], playbook=conv["playbook"], agent_id=conv["agent_id"]
                )
            if rated is not None and rated["variant"] is not None:
                labels.update(variant=rated["variant"], playbook=rated["playbook"])
            if fb.source == "agent":
                labels.update(agent_id=fb.agent_id)
                AGENT_BOT_RATINGS.labels(str(fb.rating), *label_values(labels)).inc()
                last_bot = conv["last_bot_reply_id"] if conv is not None else None
                if fb.rating <= self.settings.low_csat_max and last_bot is not None:
                    await self._queue(conn, last_bot, "agent_low")
                return
            CSAT.labels(str(fb.rating), *label_values(labels)).inc()
            if fb.nps is not None:
                NPS.labels(str(fb.nps), *label_values(labels)).inc()
            if fb.rating <= self.settings.low_csat_max:
                target = fb.reply_id
                if rated is None or rated["author"] != Role.BOT.value:
                    target = conv["last_bot_reply_id"] if conv is not None else None
                if target is not None:
                    await self._queue(conn, target, "low_csat")

    async def on_conversation_closed(self, event: ConversationClosedEvent) -> None:
        """Record the close once and count containment and resolution."""
        closed = event.payload
        resolved = closed.disposition not in self.settings.unresolved_dispositions
        at = event.occurred_at
        async with self.pg.acquire() as conn, conn.transaction():
            if await self.receipts.check(conn, Subject.of(event), "care.conversations"):
                return  # about a customer erased before it arrived: nothing is kept
            row = await conn.fetchrow(
                """
                INSERT INTO care.conversations AS c (conversation_id, customer_id, channel,
                    started_at, last_activity_at, closed_at, close_reason, disposition,
                    agent_id, fcr_candidate, tenant)
                VALUES ($1, $2, $3, $4, $4, $4, $5, $6, $7, $8, $9)
                ON CONFLICT (conversation_id) DO UPDATE SET
                    closed_at = EXCLUDED.closed_at, close_reason = EXCLUDED.close_reason,
                    disposition = EXCLUDED.disposition,
                    agent_id = COALESCE(EXCLUDED.agent_id, c.agent_id),
                    fcr_candidate = EXCLUDED.fcr_candidate
                WHERE c.closed_at IS NULL
                RETURNING *
                """,
                event.conversation_id,
                event.customer_id,
                event.channel.value,
                at,
                closed.reason.value,
                closed.disposition,
                closed.agent_id,
                resolved,
                event.tenant,
            )
        if row is None:
            return  # already closed: a redelivery or a second close
        labels = label_values(row)
        contained = "false" if row["escalated"] else "true"
        CLOSED.labels(*labels, closed.reason.value, contained).inc()
        if resolved:
            RESOLVED.labels(*labels).inc()
        CONVERSATION_SECONDS.labels(labels[0], labels[1]).observe(
            max(0.0, (row["last_activity_at"] - row["started_at"]).total_seconds())
        )

    async def on_customer_erased(self, event: CustomerErasedEvent) -> None:
        """Delete the customer's care rows: their words, scores of their replies, follow-ups.

        Customer ids count within the erased customer's tenant: another tenant's customer with
        the same id keeps their rows. The erasure's receipts commit with the deletes, so a
        record about the customer still in flight is dropped when it arrives (a redelivered
        erasure rewrites the same receipts and deletes nothing more).
        """
        erased = event.payload
        ids = [erased.erased_customer_id, *erased.identities]
        convs = erased.conversation_ids
        async with self.pg.acquire() as conn, conn.transaction():
            await self.receipts.record(
                conn,
                tenant=event.tenant,
                customers=ids,
                conversations=convs,
                erased_at=erased.requested_at,
            )
            await conn.execute(
                """
                DELETE FROM care.reviews WHERE reply_id IN (
                    SELECT reply_id FROM care.replies
                    WHERE (tenant = $3 AND customer_id = ANY($1)) OR conversation_id = ANY($2))
                """,
                ids,
                convs,
                event.tenant,
            )
            await conn.execute(
                """
                DELETE FROM care.review_items WHERE reply_id IN (
                    SELECT reply_id FROM care.replies
                    WHERE (tenant = $3 AND customer_id = ANY($1)) OR conversation_id = ANY($2))
                """,
                ids,
                convs,
                event.tenant,
            )
            for table in ("replies", "turns", "feedback", "conversations", "followups"):
                await conn.execute(
                    f"DELETE FROM care.{table} "  # noqa: S608 (table names are ours)
                    "WHERE (tenant = $3 AND customer_id = ANY($1)) OR conversation_id = ANY($2)",
                    ids,
                    convs,
                    event.tenant,
                )

    async def _queue(self, conn: Any, reply_id: uuid.UUID, reason: str) -> None:
        """Queue a reply for review, adding `reason` if it is queued already."""
        added = await conn.fetchval(
            """
            INSERT INTO care.review_items AS r (reply_id, reasons, priority)
            VALUES ($1, ARRAY[$2::text], $3)
            ON CONFLICT (reply_id) DO UPDATE SET
                reasons = r.reasons || $2::text, priority = GREATEST(r.priority, $3)
            WHERE NOT ($2::text = ANY(r.reasons))
            RETURNING true
            """,
            reply_id,
            reason,
            REASON_PRIORITY[reason],
        )
        if added:
            REVIEW_QUEUED.labels(reason).inc()

    # ---- the sweeper -----------------------------------------------------------------------

    async def sweep(self, now: datetime) -> Sweep:
        """Close idle conversations and settle FCR whose window has passed."""
        return Sweep(closed=await self.close_idle(now), fcr_settled=await self.settle_fcr(now))

    async def close_idle(self, now: datetime, limit: int = 200) -> int:
        """Publish conversation.closed for conversations idle past their channel's timeout.

        The claim (`close_requested_at`) and the publish are not atomic: a replica that dies in
        between leaves a claim that another pass re-publishes after a minute. The event id is
        derived from the conversation and its last activity, so a double publish is one close.
        """
        if self.bus is None:
            return 0
        channels = sorted({c.value for c in Channel})
        timeouts = [self.settings.idle_timeout_for(c) for c in channels]
        async with self.pg.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                WITH limits AS (
                    SELECT * FROM unnest($2::text[], $3::float8[]) AS t(channel, seconds)
                ), due AS (
                    SELECT c.conversation_id FROM care.conversations c
                    JOIN limits l ON l.channel = c.channel
                    WHERE c.closed_at IS NULL
                      AND c.last_activity_at < $1::timestamptz - make_interval(secs => l.seconds)
                      AND (c.close_requested_at IS NULL
                           OR c.close_requested_at < $1::timestamptz - interval '1 minute')
                    ORDER BY c.last_activity_at
                    LIMIT $4
                    FOR UPDATE OF c SKIP LOCKED
                )
                UPDATE care.conversations c SET close_requested_at = $1
                FROM due WHERE c.conversation_id = due.conversation_id
                RETURNING c.conversation_id, c.customer_id, c.channel, c.last_activity_at,
                    c.agent_id
                """,
                now,
                channels,
                timeouts,
                limit,
            )
        for row in rows:
            last = row["last_activity_at"]
            event = ConversationClosedEvent(
                event_type=ConversationClosedEvent.type_name(),
                event_id=uuid.uuid5(
                    uuid.NAMESPACE_URL, f"cbd:idle:{row['conversation_id']}:{last.isoformat()}"
                ),
                conversation_id=row["conversation_id"],
                customer_id=row["customer_id"],
                channel=Channel(row["channel"]),
                occurred_at=now,
                trace_id=new_trace_id(),
                payload=ConversationClosed(reason=CloseReason.IDLE, last_activity_at=last),
            )
            await self.bus.publish(event)
        return len(rows)

    async def settle_fcr(self, now: datetime) -> int:
        """Resolved conversations nobody came back about within the window are FCR."""
        rows = await self.pg.fetch(
            """
            UPDATE care.conversations SET fcr = true
            WHERE fcr IS NULL AND fcr_candidate AND closed_at IS NOT NULL
              AND closed_at < $1 AND repeated_by IS NULL
            RETURNING variant, channel, playbook, agent_id
            """,
            now - timedelta(days=self.settings.fcr_window_days),
        )
        for row in rows:
            FCR.labels(*label_values(row)).inc()
        return len(rows)
