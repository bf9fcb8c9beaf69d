"""Human review of bot replies: the blinded queue, and storing and publishing a review.

A queued reply is shown with what produced it (the customer's message, the emotion read from
it, what memory recalled, open issues, the knowledge the prompt carried and the conversation
so far), never with its variant. The playbook is not shown either: the baseline prompt follows
none, so naming it would tell the reviewer which variant wrote the reply. Both are kept with
the review for evaluation.

A reviewer works for its tenants: the queue, an item and a submission match replies within them,
so another tenant's reply is as unknown as one never queued.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from prometheus_client import Histogram
from pydantic import BaseModel, ConfigDict, StringConstraints

from services.audit.outcomes import CARE_RECEIPTS
from shared import db
from shared.events import (
    DEFAULT_TENANT,
    MAX_MESSAGE_CHARS,
    REVIEW_CRITERIA,
    Channel,
    ReviewScores,
    ReviewSubmitted,
    ReviewSubmittedEvent,
    ReviewTag,
    utcnow,
)
from shared.kafka import EventBus

REVIEW_SCORES = Histogram(
    "cbd_review_scores",
    "Reviewers' 1-5 scores of bot replies, by criterion and variant.",
    ["criterion", "variant"],
    buckets=(1, 2, 3, 4, 5),
)


class ReviewNotFound(Exception):
    """No such reply in the review queue."""


class AlreadyReviewed(Exception):
    """This reviewer has reviewed this reply already."""


class ReviewInput(BaseModel):
    """What a reviewer sends for one reply."""

    model_config = ConfigDict(extra="forbid")

    scores: ReviewScores
    tags: list[ReviewTag] = []
    better_reply: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)] = ""
    comment: Annotated[str, StringConstraints(max_length=2000)] = ""


_ITEM_SQL = """
SELECT i.reply_id, i.reasons, i.priority, i.queued_at,
       r.turn_id, r.conversation_id, r.customer_id, r.channel, r.text, r.knowledge_used,
       r.flags, r.at AS replied_at, r.variant, r.playbook, r.tenant,
       t.message, t.emotion, t.memories, t.open_issues,
       (SELECT count(*) FROM care.reviews v WHERE v.reply_id = i.reply_id) AS reviews
FROM care.review_items i
JOIN care.replies r ON r.reply_id = i.reply_id
LEFT JOIN care.turns t ON t.turn_id = r.turn_id
"""


def blinded(row: Any, transcript: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The reviewer's view of a queued reply: no variant, no playbook."""
    return {
        "reply_id": str(row["reply_id"]),
        "reasons": list(row["reasons"]),
        "queued_at": row["queued_at"].isoformat(),
        "conversation_id": row["conversation_id"],
        "channel": row["channel"],
        "message": row["message"],
        "emotion": row["emotion"],
        "memories": row["memories"] or [],
        "open_issues": row["open_issues"] or [],
        "knowledge_used": list(row["knowledge_used"]),
        "flags": list(row["flags"]),
        "reply": row["text"],
        "replied_at": row["replied_at"].isoformat(),
        "reviews": row["reviews"],
        **({"transcript": transcript} if transcript is not None else {}),
    }


class ReviewDesk:
    """The review queue and reviews, over `care.*`."""

    def __init__(self, pg: db.Pool, bus: EventBus | None) -> None:
        self.pg = pg
        self.bus = bus

    async def queue(
        self, reviewer_id: str, limit: int = 20, *, tenants: Sequence[str] = (DEFAULT_TENANT,)
    ) -> list[dict[str, Any]]:
        """The tenants' queued replies this reviewer has not reviewed, most important first."""
        rows = await self.pg.fetch(
            _ITEM_SQL  # noqa: S608 (constant SQL text; values are parameters)
            + """
            WHERE r.tenant = ANY($3::text[]) AND NOT EXISTS (SELECT 1 FROM care.reviews v
                              WHERE v.reply_id = i.reply_id AND v.reviewer_id = $1)
            ORDER BY i.priority DESC, i.queued_at
            LIMIT $2
            """,
            reviewer_id,
            limit,
            list(tenants),
        )
        return [blinded(row) for row in rows]

    async def item(
        self, reply_id: uuid.UUID, *, tenants: Sequence[str] = (DEFAULT_TENANT,)
    ) -> dict[str, Any]:
        """One of the tenants' queued replies with the conversation up to it."""
        row = await self.pg.fetchrow(
            _ITEM_SQL + "WHERE i.reply_id = $1 AND r.tenant = ANY($2::text[])",
            reply_id,
            list(tenants),
        )
        if row is None:
            raise ReviewNotFound(str(reply_id))
        transcript = await self._transcript(
            row["conversation_id"], row["replied_at"], row["tenant"]
        )
        return blinded(row, transcript)

    async def _transcript(
        self, conversation_id: str, until: datetime, tenant: str
    ) -> list[dict[str, Any]]:
        rows = await self.pg.fetch(
            """
            SELECT * FROM (
                SELECT 'customer' AS role, message AS text, at FROM care.turns
                WHERE conversation_id = $1 AND at <= $2 AND tenant = $3
                UNION ALL
                SELECT author AS role, text, at FROM care.replies
                WHERE conversation_id = $1 AND at < $2 AND tenant = $3
            ) x ORDER BY at LIMIT 50
            """,
            conversation_id,
            until,
            tenant,
        )
        return [{"role": r["role"], "text": r["text"], "at": r["at"].isoformat()} for r in rows]

    async def submit(
        self,
        reply_id: uuid.UUID,
        reviewer_id: str,
        review: ReviewInput,
        *,
        tenants: Sequence[str] = (DEFAULT_TENANT,),
    ) -> ReviewSubmittedEvent:
        """Store the review and publish `review.submitted` (audit records it like any event).

        The publish happens inside the transaction: when the broker refuses it, nothing is
        stored and the reviewer can send again.
        """
        async with self.pg.acquire() as conn, conn.transaction():
            # A review either commits before an erasure of the reply's customer (and goes with
            # the reply) or finds the reply gone: never a review left behind by one.
            await CARE_RECEIPTS.share(conn)
            reply = await conn.fetchrow(
                "SELECT r.* FROM care.review_items i JOIN care.replies r USING (reply_id) "
                "WHERE i.reply_id = $1 AND r.tenant = ANY($2::text[])",
                reply_id,
                list(tenants),
            )
            if reply is None:
                raise ReviewNotFound(str(reply_id))
            payload = ReviewSubmitted(
                review_id=uuid.uuid4(),
                reply_id=reply_id,
                reviewer_id=reviewer_id,
                scores=review.scores,
                tags=review.tags,
                better_reply=review.better_reply.strip(),
                comment=review.comment.strip(),
                variant=reply["variant"],
                submitted_at=utcnow(),
            )
            stored = await conn.fetchval(
                """
                INSERT INTO care.reviews (review_id, reply_id, reviewer_id, scores, tags,
                    better_reply, comment, submitted_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (reply_id, reviewer_id) DO NOTHING RETURNING true
                """,
                payload.review_id,
                reply_id,
                reviewer_id,
                payload.scores.model_dump(),
                list(payload.tags),
                payload.better_reply,
                payload.comment,
                payload.submitted_at,
            )
            if not stored:
                raise AlreadyReviewed(str(reply_id))
            event = ReviewSubmittedEvent.create(
                conversation_id=reply["conversation_id"],
                customer_id=reply["customer_id"],
                channel=Channel(reply["channel"]),
                tenant=reply["tenant"],
                payload=payload,
            )
            if self.bus is not None:
                await self.bus.publish(event)
        variant = reply["variant"] or "none"
        for criterion in REVIEW_CRITERIA:
            REVIEW_SCORES.labels(criterion, variant).observe(getattr(review.scores, criterion))
        return event
