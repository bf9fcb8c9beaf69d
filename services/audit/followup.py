"""Proactive follow-up: one message about an issue left open, on the customer's last channel.

Each pass (any replica, any time) finds memory's open issues not mentioned for
`followup_after_hours` whose customer allows follow-ups (`consent.follow_up`), and sends one
message as a `reply.generated` event (author `system`, flag `follow_up`) on the customer's
last conversation, which ingest delivers like any reply (SMS, WhatsApp, the web chat's
buffer).

Guarantees, and what gives them:
- **Once per issue, across restarts and replicas**: the row in `care.followups` (primary key
  `issue_id`) is inserted before the message goes out; a second replica's insert waits for the
  first's transaction and then finds the row. The message's ids derive from the issue, so even
  a publish whose commit was lost is one message at ingest, which deduplicates reply ids.
- **Never after the issue is resolved**: the issue row is read `FOR SHARE` in the transaction
  that publishes, so memory's resolve waits until the message is out, and a resolve that
  committed first hides the issue from the pass.
- **Quiet hours**: no pass sends between `quiet_hours_start` and `quiet_hours_end` in
  `quiet_timezone`; due follow-ups wait for the morning.
- **WhatsApp's 24-hour window**: after 24 hours without a customer message WhatsApp allows only
  approved templates; the follow-up then names `whatsapp_template` (flag
  `whatsapp_template:<name>`) or, without one, is recorded as skipped rather than sent.
- Voice has no way to leave a message: recorded as skipped.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from services.audit.care_settings import CareSettings
from shared import db
from shared.events import (
    Channel,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    new_trace_id,
)
from shared.kafka import EventBus

log = logging.getLogger(__name__)

FOLLOWUPS = Counter(
    "cbd_followups_total",
    "Proactive follow-ups about open issues, by outcome (sent, skipped reason) and channel.",
    ["outcome", "channel"],
)

FLAG = "follow_up"
TOPICS = {
    "billing": "the charge you asked us about",
    "fraud": "the payment you didn't recognise",
    "delivery_lost": "your missing delivery",
    "delivery_delay": "your delayed delivery",
    "refund": "your refund",
    "account_access": "getting into your account",
}


@dataclass(frozen=True)
class FollowUp:
    """One follow-up this pass handled."""

    issue_id: uuid.UUID
    customer_id: str
    conversation_id: str
    channel: str
    outcome: str
    text: str = ""


def in_quiet_hours(now: datetime, start: int, end: int, zone: str) -> bool:
    """Whether `now` falls in the quiet hours [start, end) (hours, may wrap past midnight)."""
    local = now.astimezone(ZoneInfo(zone)).time()
    begin, finish = time(start), time(end)
    if begin == finish:
        return False
    if begin < finish:
        return begin <= local < finish
    return local >= begin or local < finish


def template_values(category: str, name: str | None) -> dict[str, str]:
    """The approved follow-up template's placeholders: {{1}} the name, {{2}} the issue.

    The template registered with WhatsApp reads like `message_for`: "Hi {{1}}, we wanted to
    check in about {{2}}. Is it sorted now, or is there anything we can still do? Just reply
    here and we'll pick it up."
    """
    topic = TOPICS.get(category, f"the {category.replace('_', ' ')} issue you raised")
    return {"1": name or "there", "2": topic}


def message_for(category: str, name: str | None) -> str:
    """The follow-up's words: short, specific, and easy to answer."""
    topic = TOPICS.get(category, f"the {category.replace('_', ' ')} issue you raised")
    hello = f"Hi {name}," if name else "Hi,"
    return (
        f"{hello} we wanted to check in about {topic}. Is it sorted now, or is there anything "
        "we can still do? Just reply here and we'll pick it up."
    )


_DUE = """
SELECT i.issue_id, i.customer_id, i.tenant, i.category, c.preferred_name, c.name
FROM memory.issues i
JOIN memory.customers c ON c.tenant = i.tenant AND c.customer_id = i.customer_id
WHERE i.status <> 'resolved' AND i.updated_at < $1
  AND COALESCE((c.consent ->> $2)::boolean, false)
  AND NOT EXISTS (SELECT 1 FROM care.followups f WHERE f.issue_id = i.issue_id)
ORDER BY i.updated_at
LIMIT $3
FOR SHARE OF i SKIP LOCKED
"""

_LAST_CONVERSATION = """
SELECT c.conversation_id, c.channel,
       (SELECT max(t.at) FROM care.turns t WHERE t.conversation_id = c.conversation_id)
           AS last_customer_at
FROM care.conversations c
WHERE c.tenant = $2 AND c.customer_id = $1
ORDER BY c.last_activity_at DESC
LIMIT 1
"""


class FollowUps:
    """Finds due follow-ups and sends each once."""

    def __init__(
        self, pg: db.Pool, bus: EventBus, settings: CareSettings, replica: str = ""
    ) -> None:
        self.pg = pg
        self.bus = bus
        self.settings = settings
        self.replica = replica or uuid.uuid4().hex[:8]

    async def run(self, now: datetime, limit: int = 50) -> list[FollowUp]:
        """One pass: send (or record as skipped) each due follow-up, once."""
        s = self.settings
        if not s.followup_enabled or in_quiet_hours(
            now, s.quiet_hours_start, s.quiet_hours_end, s.quiet_timezone
        ):
            return []
        done: list[FollowUp] = []
        async with self.pg.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                _DUE, now - timedelta(hours=s.followup_after_hours), s.followup_consent_key, limit
            )
            for issue in due:
                handled = await self._one(conn, issue, now)
                if handled is not None:
                    done.append(handled)
        for item in done:
            FOLLOWUPS.labels(item.outcome, item.channel).inc()
        return done

    async def _one(self, conn: Any, issue: Any, now: datetime) -> FollowUp | None:
        last = await conn.fetchrow(_LAST_CONVERSATION, issue["customer_id"], issue["tenant"])
        conversation_id = last["conversation_id"] if last else ""
        channel = last["channel"] if last else "none"
        flags = [FLAG]
        template_variables: dict[str, str] = {}
        outcome = "sent"
        if last is None:
            outcome = "skipped_no_channel"
        elif channel == Channel.VOICE.value:
            outcome = "skipped_voice"
        elif channel == Channel.WHATSAPP.value:
            last_in = last["last_customer_at"]
            window = timedelta(hours=self.settings.whatsapp_window_hours)
            if last_in is None or now - last_in >= window:
                if self.settings.whatsapp_template:
                    flags.append(f"whatsapp_template:{self.settings.whatsapp_template}")
                    template_variables = template_values(
                        issue["category"], issue["preferred_name"] or issue["name"]
                    )
                else:
                    outcome = "skipped_whatsapp_window"
        name = issue["preferred_name"] or issue["name"]
        text = message_for(issue["category"], name) if outcome == "sent" else ""
        claimed = await conn.fetchval(
            """
            INSERT INTO care.followups (issue_id, customer_id, conversation_id, channel, status,
                detail, claimed_by, claimed_at, sent_at, tenant)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (issue_id) DO NOTHING RETURNING true
            """,
            issue["issue_id"],
            issue["customer_id"],
            conversation_id,
            channel,
            "sent" if outcome == "sent" else "skipped",
            outcome if outcome != "sent" else ",".join(flags),
            self.replica,
            now,
            now if outcome == "sent" else None,
            issue["tenant"],
        )
        if not claimed:
            return None  # another replica has it
        if outcome == "sent":
            issue_id: uuid.UUID = issue["issue_id"]
            event = ReplyGeneratedEvent(
                event_type=ReplyGeneratedEvent.type_name(),
                event_id=uuid.uuid5(issue_id, "follow_up.event"),
                conversation_id=conversation_id,
                customer_id=issue["customer_id"],
                channel=Channel(channel),
                # The customer's tenant: ingest delivers only to the conversation's owners.
                tenant=issue["tenant"],
                occurred_at=now,
                trace_id=new_trace_id(),
                payload=ReplyGenerated(
                    turn_id=uuid.uuid5(issue_id, "follow_up.turn"),
                    reply_id=uuid.uuid5(issue_id, "follow_up.reply"),
                    author=Role.SYSTEM,
                    text=text,
                    flags=flags,
                    template_variables=template_variables,
                ),
            )
            # Inside the transaction: the issue stays locked against a resolve until it is out.
            await self.bus.publish(event)
        return FollowUp(
            issue_id=issue["issue_id"],
            customer_id=issue["customer_id"],
            conversation_id=conversation_id,
            channel=channel,
            outcome=outcome,
            text=text,
        )
