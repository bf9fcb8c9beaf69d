"""The handoff desk: who owns each conversation, the agent queue, and the moves agents make.

PostgreSQL is the record. Every change of owner bumps the conversation's `epoch` and mirrors
`{owner, epoch}` (`shared.ownership`) to Redis through an outbox written in the same
transaction. Generation checks the mirror before each piece of a bot reply: a turn routed to
the bot under an older epoch (a person took over meanwhile) is never delivered. Turns of one
conversation arrive in order on one partition, and agents' moves are single-row transactions
that check the status they expect, so two agents cannot both claim a ticket.

Agents act within their tenants: every read and move takes the agent's tenants and matches
tickets within them, so another tenant's ticket is as unknown as a ticket that never existed.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram

from shared import ownership
from shared.db import Pool
from shared.erasure import LateRecord, Receipts, Subject
from shared.events import (
    DEFAULT_TENANT,
    Envelope,
    Handoff,
    ReplyGeneratedEvent,
    RouteReason,
    RouteTarget,
    RoutingDecision,
    Severity,
    TurnContextualizedEvent,
    TurnIntent,
    utcnow,
)
from shared.metrics import LATENCY_BUCKETS
from shared.outbox import Message, Outbox

TICKETS = Counter("cbd_tickets_total", "Agent tickets, by what happened to them.", ["event"])
QUEUE_WAIT = Histogram(
    "cbd_agent_queue_wait_seconds",
    "From a ticket opening to an agent claiming it.",
    buckets=(*LATENCY_BUCKETS, 120.0, 300.0, 600.0, 1800.0),
)
SECONDS_TO_ESCALATE = Histogram(
    "cbd_seconds_to_escalate",
    "From a conversation's first turn to its routing to a human.",
    buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
)

HUMAN_OWNS = "human_owns"
OWNERSHIP = "ownership"
"""The outbox kind of an ownership mirror message (keyed by conversation id)."""


_RANK: dict[Severity, int] = {"low": 0, "medium": 1, "high": 2}


def severity_of(reasons: list[RouteReason]) -> Severity:
    """How urgently a person is needed: the most severe of the rules that fired.

    Each rule's severity is declared in the policy file and travels on its reason.
    """
    return max((r.severity or "low" for r in reasons), key=_RANK.__getitem__, default="low")


VALUED_TIERS = {"platinum": 60, "gold": 40, "silver": 20}


def priority_of(severity: Severity, escalation_risk: float, tier: str | None = None) -> int:
    """Queue order: severity first, then the customer's value and the conversation's risk."""
    base = {"high": 300, "medium": 200, "low": 100}[severity]
    value = VALUED_TIERS.get((tier or "").strip().lower(), 0)
    return base + value + round(39 * max(0.0, min(1.0, escalation_risk)))


def eta_minutes(position: int, handle_minutes: float, agents_on_shift: int) -> int:
    """A rough wait: the tickets up to this one, shared by the agents on shift."""
    return max(1, math.ceil(position * handle_minutes / max(1, agents_on_shift)))


@dataclass(frozen=True)
class AgentSkills:
    """Which skill queues each agent serves (settings); unlisted agents serve them all."""

    skills: dict[str, list[str]]

    def of(self, agent_id: str) -> list[str]:
        """The agent's queues; empty means every queue."""
        return list(self.skills.get(agent_id, []))


class TicketConflict(Exception):
    """The ticket is not in the state the move needs (e.g. someone else claimed it)."""


class TicketNotFound(Exception):
    """No such ticket."""


@dataclass(frozen=True)
class Ticket:
    """A conversation waiting for, or with, a person."""

    ticket_id: uuid.UUID
    conversation_id: str
    customer_id: str
    channel: str
    status: str
    priority: int
    severity: str
    reasons: list[dict[str, str]]
    summary: str
    created_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    last_turn_id: uuid.UUID | None = None
    intent: str = "general"
    skill: str = "general"
    tenant: str = DEFAULT_TENANT
    """The tenant the customer belongs to (the event envelope's)."""

    def as_json(self) -> dict[str, Any]:
        """The API form."""
        return {
            "ticket_id": str(self.ticket_id),
            "conversation_id": self.conversation_id,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "status": self.status,
            "priority": self.priority,
            "severity": self.severity,
            "reasons": self.reasons,
            "summary": self.summary,
            "created_at": self.created_at.isoformat(),
            "waiting_seconds": round((utcnow() - self.created_at).total_seconds(), 1),
            "claimed_by": self.claimed_by,
            "intent": self.intent,
            "skill": self.skill,
            "tenant": self.tenant,
        }


_TICKET_COLUMNS = """
    t.ticket_id, t.conversation_id, t.customer_id, t.channel, t.status, t.priority, t.severity,
    t.reasons, t.summary, t.created_at, t.claimed_by, t.claimed_at, c.last_turn_id,
    t.intent, t.skill, t.tenant
"""


def _ticket(row: Any) -> Ticket:
    return Ticket(**dict(row))


class Desk:
    """Ownership, tickets and agent moves, on PostgreSQL with the owner mirrored in Redis."""

    def __init__(
        self,
        pg: Pool,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        handle_minutes: float,
        agents_on_shift: int,
    ) -> None:
        self.pg = pg
        self.redis = redis
        self.prefix = key_prefix
        self.handle_minutes = handle_minutes
        self.agents_on_shift = max(1, agents_on_shift)
        # A change of owner commits with its mirror message; the relay (run by the app)
        # mirrors what could not be mirrored right after the commit.
        self.outbox = Outbox(pg, "escalation", {OWNERSHIP: self._deliver}, service="escalation")
        self.receipts = Receipts("escalation.erasure_receipts", "cbd_escalation_erasure")

    async def erase(
        self,
        customer_ids: list[str],
        conversation_ids: list[str],
        *,
        tenant: str = DEFAULT_TENANT,
        erased_at: datetime | None = None,
    ) -> int:
        """Delete the tickets and ownership of an erased customer; return tickets deleted.

        Customer ids count within the erased customer's tenant only: another tenant's
        customer with the same id keeps their tickets. The erasure's receipts (`erased_at`:
        when it was asked for) commit with the deletes, so a turn or reply about the customer
        still in flight opens nothing when it arrives.
        """
        async with self.pg.acquire() as conn, conn.transaction():
            await self.receipts.record(
                conn,
                tenant=tenant,
                customers=customer_ids,
                conversations=conversation_ids,
                erased_at=erased_at or utcnow(),
            )
            conversations = [
                r["conversation_id"]
                for r in await conn.fetch(
                    "SELECT conversation_id FROM escalation.conversations "
                    "WHERE (tenant = $3 AND customer_id = ANY($1)) OR conversation_id = ANY($2)",
                    customer_ids,
                    conversation_ids,
                    tenant,
                )
            ]
            deleted = await conn.fetchval(
                "WITH gone AS (DELETE FROM escalation.tickets "
                "WHERE (tenant = $3 AND customer_id = ANY($1)) OR conversation_id = ANY($2) "
                "RETURNING 1) SELECT count(*) FROM gone",
                customer_ids,
                conversations,
                tenant,
            )
            await conn.execute(
                "DELETE FROM escalation.conversations WHERE conversation_id = ANY($1)",
                conversations,
            )
            # A mirror still waiting would write an erased conversation's key back.
            await conn.execute(
                "DELETE FROM escalation.outbox WHERE kind = $1 AND key = ANY($2)",
                OWNERSHIP,
                conversations,
            )
        if conversations:
            await self.redis.delete(*[self.owner_key(c) for c in conversations])
        return int(deleted or 0)

    def owner_key(self, conversation_id: str) -> str:
        """The Redis key generation reads before delivering a bot reply."""
        return ownership.owner_key(self.prefix, conversation_id)

    async def owner(self, conversation_id: str) -> ownership.Ownership | None:
        """The conversation's mirrored owner (None: never handed over)."""
        return await ownership.read(self.redis, self.prefix, conversation_id)

    async def _stage(
        self, conn: Any, conversation_id: str, owner: ownership.Owner, epoch: int
    ) -> Message:
        """Write the owner's mirror to the outbox in the move's transaction."""
        record = ownership.Ownership(owner=owner, epoch=epoch)
        return await self.outbox.add(conn, OWNERSHIP, conversation_id, ownership.encode(record))

    async def _deliver(self, message: Message) -> None:
        """Mirror a committed change of owner to Redis (never behind a later epoch)."""
        record = ownership.decode(message.payload)
        if record is None:
            raise ValueError(f"unreadable ownership record in the outbox: {message.payload!r}")
        await ownership.write(self.redis, self.prefix, message.key, record)

    async def route(
        self, event: TurnContextualizedEvent, policy: Callable[[int], RoutingDecision]
    ) -> RoutingDecision:
        """The final decision for a turn: the policy's, unless a person already owns it.

        `policy` is called with the customer turns the bot has had since it last took the
        conversation (from the start, or from a person's hand-back). Opening a ticket is
        idempotent per turn event: a redelivered turn finds its ticket. A turn of a customer
        erased before it arrived stores nothing and raises `LateRecord`.
        """
        async with self.pg.acquire() as conn, conn.transaction():
            late = await self.receipts.check(conn, Subject.of(event), "escalation.tickets")
            if not late:
                decision, mirror = await self._route(conn, event, policy)
        if late:
            raise LateRecord("escalation.tickets")
        if mirror is not None:
            await self.outbox.deliver_now([mirror])
        return decision

    @staticmethod
    async def _lock_conversation(conn: Any, event: Envelope) -> Any:
        """The event's conversation row, created if new, locked for this transaction."""
        await conn.execute(
            """
            INSERT INTO escalation.conversations (conversation_id, customer_id, channel, tenant)
            VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id) DO NOTHING
            """,
            event.conversation_id,
            event.customer_id,
            event.channel.value,
            event.tenant,
        )
        conv = await conn.fetchrow(
            "SELECT * FROM escalation.conversations WHERE conversation_id = $1 FOR UPDATE",
            event.conversation_id,
        )
        assert conv is not None
        return conv

    async def _route(
        self,
        conn: Any,
        event: TurnContextualizedEvent,
        policy: Callable[[int], RoutingDecision],
    ) -> tuple[RoutingDecision, Message | None]:
        turn = event.payload
        conv = await self._lock_conversation(conn, event)
        opened = await conn.fetchrow(
            "SELECT ticket_id FROM escalation.tickets WHERE opened_by_event = $1",
            event.event_id,
        )
        # A redelivered turn must not count twice towards the bot's run.
        counted = conv["last_turn_id"] == turn.message.turn_id
        bot_turns = conv["bot_turns"] + (0 if counted or conv["owner"] != "bot" else 1)
        await conn.execute(
            "UPDATE escalation.conversations SET last_turn_id = $2, bot_turns = $3, "
            "updated_at = now() WHERE conversation_id = $1",
            event.conversation_id,
            turn.message.turn_id,
            bot_turns,
        )
        if conv["owner"] != "bot" and opened is None:
            handoff = await self._current_handoff(conn, event, conv)
            held = RoutingDecision(
                target=RouteTarget.HUMAN,
                reasons=[RouteReason(code=HUMAN_OWNS, detail=_owner_detail(conv))],
                policy="ownership",
                epoch=conv["epoch"],
                handoff=handoff,
            )
            return held, None
        policy_decision = policy(bot_turns)
        if policy_decision.target is RouteTarget.BOT:
            return policy_decision.model_copy(update={"epoch": conv["epoch"]}), None
        if opened is not None:
            ticket_id = opened["ticket_id"]
            epoch = conv["epoch"]
        else:
            ticket_id, epoch = await self._open_ticket(
                conn,
                event,
                conv,
                # This turn's reply is the handoff notice (`Handoff.new`).
                announced=True,
                reasons=policy_decision.reasons,
                risk=turn.trajectory.escalation_risk if turn.trajectory else 0.0,
                text=turn.message.text,
                tier=turn.context.customer_tier,
                intent=turn.intent,
            )
        position = await self._position(conn, ticket_id)
        mirror = await self._stage(conn, event.conversation_id, "queued", epoch)
        decision = policy_decision.model_copy(
            update={
                "epoch": epoch,
                "handoff": Handoff(
                    ticket_id=ticket_id,
                    new=True,
                    owner="queued",
                    queue_position=position,
                    eta_minutes=self.eta_minutes(position),
                ),
            }
        )
        return decision, mirror

    async def open_for_reply(self, event: ReplyGeneratedEvent, reason: RouteReason) -> bool:
        """Queue the conversation when a bot reply was flagged as needing a person.

        Idempotent per reply event; False when a person already has the conversation, or the
        customer was erased before the reply arrived. The ticket is not announced yet (see
        `_current_handoff`).
        """
        async with self.pg.acquire() as conn, conn.transaction():
            if await self.receipts.check(conn, Subject.of(event), "escalation.tickets"):
                return False
            conv = await self._lock_conversation(conn, event)
            if conv["owner"] != "bot":
                return False
            if await conn.fetchval(
                "SELECT 1 FROM escalation.tickets WHERE opened_by_event = $1", event.event_id
            ):
                return False
            # The flagged reply may say a colleague will follow up, but not that a person now
            # holds the conversation: the customer's next turn carries the handoff notice.
            _, epoch = await self._open_ticket(
                conn, event, conv, announced=False, reasons=[reason], risk=0.0, text=reason.detail
            )
            mirror = await self._stage(conn, event.conversation_id, "queued", epoch)
        await self.outbox.deliver_now([mirror])
        return True

    async def _open_ticket(
        self,
        conn: Any,
        event: Envelope,
        conv: Any,
        *,
        announced: bool,
        reasons: list[RouteReason],
        risk: float,
        text: str,
        tier: str | None = None,
        intent: TurnIntent | None = None,
    ) -> tuple[uuid.UUID, int]:
        """Insert a ticket and hand the conversation to the queue; (ticket id, new epoch).

        `announced`: the event that opens the ticket also tells the customer a person is
        coming; otherwise the ticket waits for the next turn or an agent's reply to do so.

        The turn's intent names the skill queue; its urgency (fraud, bereavement...) counts
        towards the queue order like the conversation's escalation risk.
        """
        ticket_id = uuid.uuid5(event.event_id, "ticket")
        severity = severity_of(reasons)
        urgency = intent.urgency if intent is not None else 0.0
        await conn.execute(
            """
            INSERT INTO escalation.tickets (ticket_id, conversation_id, customer_id,
                channel, priority, severity, reasons, summary, opened_by_event, intent, skill,
                tenant, announced_by_event)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            """,
            ticket_id,
            event.conversation_id,
            event.customer_id,
            event.channel.value,
            priority_of(severity, max(risk, urgency), tier),
            severity,
            [r.model_dump() for r in reasons],
            _summary(text, reasons),
            event.event_id,
            intent.intent if intent is not None else "general",
            intent.skill if intent is not None else "general",
            event.tenant,
            event.event_id if announced else None,
        )
        epoch: int = await conn.fetchval(
            "UPDATE escalation.conversations SET owner = 'queued', agent_id = NULL, "
            "epoch = epoch + 1, updated_at = now() WHERE conversation_id = $1 RETURNING epoch",
            event.conversation_id,
        )
        TICKETS.labels("opened").inc()
        SECONDS_TO_ESCALATE.observe(max(0.0, (utcnow() - conv["started_at"]).total_seconds()))
        return ticket_id, epoch

    def eta_minutes(self, position: int) -> int:
        """The wait to tell a customer at this place in the queue."""
        return eta_minutes(position, self.handle_minutes, self.agents_on_shift)

    async def _position(self, conn: Any, ticket_id: uuid.UUID) -> int:
        row = await conn.fetchrow(
            "SELECT priority, created_at, tenant FROM escalation.tickets WHERE ticket_id = $1",
            ticket_id,
        )
        # The tenant's own agents serve its queue: other tenants' tickets are not ahead.
        ahead: int = await conn.fetchval(
            """
            SELECT count(*) FROM escalation.tickets
            WHERE status = 'queued' AND ticket_id <> $1 AND tenant = $4
              AND (priority > $2 OR (priority = $2 AND created_at <= $3))
            """,
            ticket_id,
            row["priority"],
            row["created_at"],
            row["tenant"],
        )
        return ahead + 1

    async def _current_handoff(
        self, conn: Any, event: TurnContextualizedEvent, conv: Any
    ) -> Handoff | None:
        """The open ticket of a conversation a person owns, as this turn sees it.

        A ticket nobody has announced yet (a flagged bot reply opened it) is announced by this
        turn: generation sends the handoff notice. The turn is recorded as the announcer in
        the same transaction, so the notice goes out once, and again only if this very turn
        is redelivered (its reply id is the same, so the channel shows it once).
        """
        row = await conn.fetchrow(
            "SELECT ticket_id, announced_by_event FROM escalation.tickets "
            "WHERE conversation_id = $1 AND status IN ('queued', 'claimed')",
            event.conversation_id,
        )
        if row is None:
            return None
        announce = row["announced_by_event"] in (None, event.event_id)
        if row["announced_by_event"] is None:
            await conn.execute(
                "UPDATE escalation.tickets SET announced_by_event = $2 WHERE ticket_id = $1",
                row["ticket_id"],
                event.event_id,
            )
            TICKETS.labels("announced_late").inc()
        position = await self._position(conn, row["ticket_id"]) if conv["owner"] == "queued" else 0
        return Handoff(
            ticket_id=row["ticket_id"],
            new=False,
            announce=announce,
            owner=conv["owner"],
            agent_id=conv["agent_id"],
            queue_position=position,
            eta_minutes=self.eta_minutes(position) if position else 0,
        )

    async def mark_told(self, conversation_id: str, event_id: uuid.UUID) -> bool:
        """Record that a person's reply has told the customer; True if nobody had yet.

        An agent who answers before the customer writes again has told them a person is
        there: their next turn needs no handoff notice.
        """
        async with self.pg.acquire() as conn:
            done: str = await conn.execute(
                "UPDATE escalation.tickets SET announced_by_event = $2 WHERE conversation_id = $1 "
                "AND status IN ('queued', 'claimed') AND announced_by_event IS NULL",
                conversation_id,
                event_id,
            )
        return done.endswith(" 1")

    async def queue(
        self,
        limit: int = 100,
        skills: Sequence[str] = (),
        *,
        tenants: Sequence[str] = (DEFAULT_TENANT,),
    ) -> list[Ticket]:
        """The tenants' open tickets, most urgent and longest waiting first; claimed ones after.

        `skills`: only these skill queues (none: every queue).
        """
        rows = await self.pg.fetch(
            f"""
            SELECT {_TICKET_COLUMNS} FROM escalation.tickets t
            JOIN escalation.conversations c USING (conversation_id)
            WHERE t.status IN ('queued', 'claimed') AND t.tenant = ANY($3::text[])
              AND (cardinality($2::text[]) = 0 OR t.skill = ANY($2::text[]))
            ORDER BY (t.status = 'claimed'), t.priority DESC, t.created_at
            LIMIT $1
            """,  # noqa: S608 (a fixed column list, no input)
            limit,
            list(skills),
            list(tenants),
        )
        return [_ticket(r) for r in rows]

    async def get(
        self, ticket_id: uuid.UUID, *, tenants: Sequence[str] = (DEFAULT_TENANT,)
    ) -> Ticket:
        """One of the tenants' tickets; TicketNotFound for an unknown or another tenant's."""
        row = await self.pg.fetchrow(
            f"SELECT {_TICKET_COLUMNS} FROM escalation.tickets t "  # noqa: S608
            "JOIN escalation.conversations c USING (conversation_id) "
            "WHERE t.ticket_id = $1 AND t.tenant = ANY($2::text[])",
            ticket_id,
            list(tenants),
        )
        if row is None:
            raise TicketNotFound(str(ticket_id))
        return _ticket(row)

    async def claim(
        self, ticket_id: uuid.UUID, agent_id: str, *, tenants: Sequence[str] = (DEFAULT_TENANT,)
    ) -> Ticket:
        """Take a queued ticket; TicketConflict when it is not queued any more."""
        return await self._move(
            ticket_id,
            expect="queued",
            status="claimed",
            owner="agent",
            agent_id=agent_id,
            event="claimed",
            tenants=tenants,
        )

    async def transfer(
        self,
        ticket_id: uuid.UUID,
        agent_id: str,
        to_agent: str,
        *,
        tenants: Sequence[str] = (DEFAULT_TENANT,),
    ) -> Ticket:
        """Hand a claimed ticket to another agent."""
        return await self._move(
            ticket_id,
            expect="claimed",
            status="claimed",
            owner="agent",
            agent_id=to_agent,
            event="transferred",
            by=agent_id,
            tenants=tenants,
        )

    async def resolve(
        self, ticket_id: uuid.UUID, agent_id: str, *, tenants: Sequence[str] = (DEFAULT_TENANT,)
    ) -> Ticket:
        """Close the ticket; the bot answers the conversation's next turns again."""
        return await self._move(
            ticket_id,
            expect="claimed",
            status="resolved",
            owner="bot",
            agent_id=None,
            event="resolved",
            by=agent_id,
            tenants=tenants,
        )

    async def hand_back(
        self, ticket_id: uuid.UUID, agent_id: str, *, tenants: Sequence[str] = (DEFAULT_TENANT,)
    ) -> Ticket:
        """Give the conversation back to the bot without resolving the customer's issue."""
        return await self._move(
            ticket_id,
            expect="claimed",
            status="handed_back",
            owner="bot",
            agent_id=None,
            event="handed_back",
            by=agent_id,
            tenants=tenants,
        )

    async def _move(
        self,
        ticket_id: uuid.UUID,
        *,
        expect: str,
        status: str,
        owner: ownership.Owner,
        agent_id: str | None,
        event: str,
        by: str | None = None,
        tenants: Sequence[str],
    ) -> Ticket:
        async with self.pg.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT status, claimed_by, conversation_id, created_at FROM escalation.tickets "
                "WHERE ticket_id = $1 AND tenant = ANY($2::text[]) FOR UPDATE",
                ticket_id,
                list(tenants),
            )
            if row is None:
                raise TicketNotFound(str(ticket_id))
            if row["status"] != expect:
                raise TicketConflict(f"ticket is {row['status']}, not {expect}")
            if by is not None and row["claimed_by"] != by:
                raise TicketConflict(f"ticket is claimed by {row['claimed_by']}")
            # The agent who holds the ticket after the move (None when it leaves the agents).
            await conn.execute(
                """
                UPDATE escalation.tickets SET
                    status = $2,
                    claimed_by = COALESCE($3, claimed_by),
                    claimed_at = CASE WHEN $4 THEN now() ELSE claimed_at END,
                    closed_at = CASE WHEN $2 IN ('resolved', 'handed_back') THEN now()
                                     ELSE closed_at END
                WHERE ticket_id = $1
                """,
                ticket_id,
                status,
                agent_id,
                event == "claimed",
            )
            epoch = await conn.fetchval(
                "UPDATE escalation.conversations SET owner = $2, agent_id = $3, "
                "epoch = epoch + 1, bot_turns = 0, updated_at = now() "
                "WHERE conversation_id = $1 RETURNING epoch",
                row["conversation_id"],
                owner,
                agent_id,
            )
            mirror = await self._stage(conn, row["conversation_id"], owner, epoch)
        await self.outbox.deliver_now([mirror])
        TICKETS.labels(event).inc()
        if event == "claimed":
            QUEUE_WAIT.observe(max(0.0, (utcnow() - row["created_at"]).total_seconds()))
        return await self.get(ticket_id, tenants=tenants)


def _owner_detail(conv: Any) -> str:
    if conv["owner"] == "agent":
        return f"agent {conv['agent_id']} has this conversation"
    return "waiting in the agent queue"


def _summary(text: str, reasons: list[RouteReason]) -> str:
    why = ", ".join(r.code.replace("_", " ") for r in reasons)
    quoted = text if len(text) <= 160 else text[:157] + "..."
    return f"{why}: \u201c{quoted}\u201d"
