"""The agent's rating of the bot's part of a conversation, before the handoff.

An agent who takes a conversation over sees how the bot handled it; their 1-5 rating (and an
optional comment) is the platform's most informed judgement of the bot, so it is kept with the
ticket (`escalation.bot_ratings`, one per ticket) and published as `feedback.received` with
source `agent`, the agent and the ticket. Audit counts it by the variant, playbook and channel
of the conversation's bot replies, apart from customers' CSAT.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.escalation.api import Agent, Bus, DeskDep, TicketId
from services.escalation.desk import Ticket
from shared.events import Channel, Feedback, FeedbackReceivedEvent, new_trace_id, utcnow
from shared.http import ApiError, error_responses

BOT_RATINGS = Counter(
    "cbd_agent_bot_ratings_total",
    "Agents' 1-5 ratings of how the bot handled a conversation before the handoff.",
    ["rating"],
)


class BotRatingBody(BaseModel):
    """Body of POST /v1/agent/tickets/{id}/bot-rating."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    rating: Annotated[int, Field(ge=1, le=5, strict=True)]
    """1 (the bot made it worse) to 5 (the bot did all it could)."""
    comment: Annotated[str, StringConstraints(max_length=2000)] = ""


class BotRating(BaseModel):
    """An agent's rating of the bot's part of one ticket."""

    ticket_id: str
    conversation_id: str
    agent_id: str
    rating: int
    comment: str
    event_id: str
    rated_at: datetime


def bot_rating_event(ticket: Ticket, agent_id: str, body: BotRatingBody) -> FeedbackReceivedEvent:
    """The feedback.received event of a ticket's bot rating, one id per ticket."""
    return FeedbackReceivedEvent(
        event_type=FeedbackReceivedEvent.type_name(),
        event_id=uuid.uuid5(ticket.ticket_id, "bot_rating"),
        conversation_id=ticket.conversation_id,
        customer_id=ticket.customer_id,
        channel=Channel(ticket.channel),
        tenant=ticket.tenant,
        occurred_at=utcnow(),
        trace_id=new_trace_id(),
        payload=Feedback(
            rating=body.rating,
            comment=body.comment,
            source="agent",
            agent_id=agent_id,
            ticket_id=ticket.ticket_id,
        ),
    )


def _rating(row: Any) -> BotRating:
    return BotRating(
        ticket_id=str(row["ticket_id"]),
        conversation_id=row["conversation_id"],
        agent_id=row["agent_id"],
        rating=row["rating"],
        comment=row["comment"],
        event_id=str(row["event_id"]),
        rated_at=row["rated_at"],
    )


def bot_rating_router() -> APIRouter:
    """Rate the bot's part of a ticket, once, and read that rating back."""
    router = APIRouter(prefix="/v1/agent", tags=["agents"])
    path = "/tickets/{ticket_id}/bot-rating"

    @router.get(path, responses=error_responses(400, 401, 404, 503))
    async def read_bot_rating(ticket_id: TicketId, agent: Agent, desk: DeskDep) -> BotRating:
        """The ticket's rating of the bot (404 `not_rated` until an agent has given one)."""
        await desk.get(ticket_id, tenants=agent.tenants)
        row = await desk.pg.fetchrow(
            "SELECT * FROM escalation.bot_ratings WHERE ticket_id = $1", ticket_id
        )
        if row is None:
            raise ApiError(404, "not_rated", "the bot's part of this ticket is not rated yet")
        return _rating(row)

    @router.post(path, status_code=201, responses=error_responses(400, 401, 404, 409, 422, 503))
    async def rate_bot(
        ticket_id: TicketId, body: BotRatingBody, agent: Agent, desk: DeskDep, bus: Bus
    ) -> BotRating:
        """Rate how the bot handled the conversation before the handoff, once per ticket.

        Only the agent holding the ticket (claimed, or resolved by them) may rate it; a second
        rating is 409 `already_rated`. Published as `feedback.received` (source `agent`).
        """
        ticket = await desk.get(ticket_id, tenants=agent.tenants)
        if ticket.claimed_by != agent.agent_id:
            raise ApiError(409, "conflict", "claim the ticket before rating the bot's part")
        event = bot_rating_event(ticket, agent.agent_id, body)
        async with desk.pg.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """
                INSERT INTO escalation.bot_ratings (ticket_id, conversation_id, agent_id, rating,
                    comment, event_id, tenant)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (ticket_id) DO NOTHING
                RETURNING *
                """,
                ticket.ticket_id,
                ticket.conversation_id,
                agent.agent_id,
                body.rating,
                body.comment,
                event.event_id,
                ticket.tenant,
            )
            if row is None:
                raise ApiError(
                    409, "already_rated", "the bot's part of this ticket is rated already"
                )
            # Inside the transaction: if the broker refuses, nothing is stored and the agent
            # can rate again.
            await bus.publish(event)
        BOT_RATINGS.labels(str(body.rating)).inc()
        return _rating(row)

    return router
