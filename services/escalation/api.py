"""The agents' HTTP and WebSocket API, and the console page.

Three routers: the console page, the agent API (sign-in, queue, tickets and the moves agents
make) and the live feed socket. The routes get the desk, the bus and the console feed from
the lifespan (`shared.http.requires`), so until the service has started they answer 503.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, StringConstraints
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect

from services.escalation.auth import AgentAuth, AgentToken, LoginThrottle
from services.escalation.desk import AgentSkills, Desk, Ticket, TicketConflict, TicketNotFound
from services.escalation.live import AgentHub, ConsoleFeed
from services.escalation.packet import build_packet
from shared.events import (
    MAX_MESSAGE_CHARS,
    Channel,
    CloseReason,
    ConversationClosed,
    ConversationClosedEvent,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    new_trace_id,
    utcnow,
)
from shared.http import ApiError, error_responses, html_page, requires
from shared.kafka import EventBus
from shared.service import Infra

STATIC = Path(__file__).parent / "static"
CONSOLE_PAGE = (STATIC / "console.html").read_text()


class Login(BaseModel):
    """Body of POST /v1/agent/login."""

    model_config = ConfigDict(extra="forbid")
    agent_id: str
    password: str


class Session(BaseModel):
    """A signed-in agent's bearer token."""

    token: str
    agent_id: str
    tenants: list[str]


class SignedOut(BaseModel):
    """Every token of the agent is void: sockets close, the next request answers 401."""

    agent_id: str
    token_version: int


class AgentReply(BaseModel):
    """Body of POST /v1/agent/tickets/{id}/reply."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]


class ReplySent(BaseModel):
    """The id of the reply an agent sent."""

    reply_id: str


class Resolve(BaseModel):
    """Body of POST /v1/agent/tickets/{id}/resolve (optional)."""

    model_config = ConfigDict(extra="forbid")
    disposition: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")] = "resolved"


def agent_closed(ticket: Ticket, agent_id: str, disposition: str) -> ConversationClosedEvent:
    """The conversation.closed event of an agent's resolve, the same id for the same ticket."""
    return ConversationClosedEvent(
        event_type=ConversationClosedEvent.type_name(),
        event_id=uuid.uuid5(ticket.ticket_id, ConversationClosedEvent.type_name()),
        conversation_id=ticket.conversation_id,
        customer_id=ticket.customer_id,
        channel=Channel(ticket.channel),
        occurred_at=utcnow(),
        trace_id=new_trace_id(),
        payload=ConversationClosed(
            reason=CloseReason.AGENT_RESOLVED,
            disposition=disposition,
            agent_id=agent_id,
            ticket_id=ticket.ticket_id,
        ),
    )


class Transfer(BaseModel):
    """Body of POST /v1/agent/tickets/{id}/transfer."""

    model_config = ConfigDict(extra="forbid")
    to_agent: str


Auth = Annotated[AgentAuth, Depends(requires(AgentAuth))]
Throttle = Annotated[LoginThrottle, Depends(requires(LoginThrottle))]
DeskDep = Annotated[Desk, Depends(requires(Desk))]
Bus = Annotated[EventBus, Depends(requires(EventBus))]
Feed = Annotated[ConsoleFeed, Depends(requires(ConsoleFeed))]
TicketId = uuid.UUID

REFUSALS: dict[type[Exception], Callable[[Exception], ApiError]] = {
    TicketNotFound: lambda _: ApiError(404, "not_found", "no such ticket"),
    TicketConflict: lambda exc: ApiError(409, "conflict", str(exc)),
}
"""How the desk's refusals read over HTTP."""


def console_router() -> APIRouter:
    """The agent console page."""
    router = APIRouter(tags=["console"])

    @router.get("/console", response_class=HTMLResponse)
    async def console() -> HTMLResponse:
        """The agent console: queue, handoff packet, live transcript, replies."""
        return html_page(CONSOLE_PAGE)

    return router


async def say(bus: EventBus, ticket: Ticket, author: Role, text: str, flags: list[str]) -> str:
    """Publish a message to the ticket's customer, on their channel; return the reply id."""
    reply_id = uuid.uuid4()
    event = ReplyGeneratedEvent.create(
        conversation_id=ticket.conversation_id,
        customer_id=ticket.customer_id,
        channel=Channel(ticket.channel),
        # The customer's tenant: ingest delivers only to its owners, memory files it there.
        tenant=ticket.tenant,
        payload=ReplyGenerated(
            turn_id=ticket.last_turn_id or ticket.ticket_id,
            reply_id=reply_id,
            author=author,
            text=text,
            flags=flags,
        ),
    )
    await bus.publish(event)
    return str(reply_id)


def signed_in(auth: Auth, authorization: Annotated[str, Header()] = "") -> AgentToken:
    """The agent whose bearer token came with the request; 401 without a valid one."""
    scheme, _, token = authorization.partition(" ")
    verified = auth.verify(token) if scheme.lower() == "bearer" else None
    if verified is None:
        raise ApiError(401, "unauthorized", "sign in: Authorization: Bearer <token>")
    return verified


Agent = Annotated[AgentToken, Depends(signed_in)]


def agent_router() -> APIRouter:
    """Sign-in, the queue, tickets and the moves agents make."""
    router = APIRouter(prefix="/v1/agent", tags=["agents"])
    ticket_path = "/tickets/{ticket_id}"
    refusals = error_responses(400, 401, 404, 409, 503)

    async def changed(feed: ConsoleFeed, ticket: Ticket) -> dict[str, Any]:
        await feed.broadcast({"type": "queue_changed"}, tenant=ticket.tenant)
        return ticket.as_json()

    @router.post("/login", responses=error_responses(401, 422, 429, 503))
    async def login(body: Login, request: Request, auth: Auth, throttle: Throttle) -> Session:
        """Exchange an agent id and password for a bearer token."""
        address = request.client.host if request.client else "unknown"
        try:
            wait = await throttle.retry_after(body.agent_id, address)
        except RedisError as exc:
            raise ApiError(503, "unavailable", "sign-in is unavailable; try again shortly") from exc
        if wait is not None:
            raise ApiError(
                429,
                "too_many_attempts",
                "too many failed sign-ins; wait",
                headers={"Retry-After": str(wait)},
            )
        # argon2 is deliberately slow: hash off the event loop.
        token = await asyncio.to_thread(auth.login, body.agent_id, body.password)
        verified = auth.verify(token) if token is not None else None
        if token is None or verified is None:
            await throttle.failed(body.agent_id, address)
            raise ApiError(401, "unauthorized", "unknown agent or wrong password")
        await throttle.succeeded(body.agent_id, address)
        return Session(token=token, agent_id=verified.agent_id, tenants=list(verified.tenants))

    @router.get("/queue", responses=error_responses(401, 503))
    async def queue(
        agent: Agent,
        desk: DeskDep,
        skills: Annotated[AgentSkills, Depends(requires(AgentSkills))],
        skill: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
        mine: bool = False,
    ) -> dict[str, list[dict[str, Any]]]:
        """The agent's tenants' open tickets, most urgent first: every queue, the `skill`
        queues named, or with `mine=true` the queues the agent serves (`agent_skills`)."""
        wanted = skills.of(agent.agent_id) if mine else skill
        return {
            "tickets": [t.as_json() for t in await desk.queue(skills=wanted, tenants=agent.tenants)]
        }

    @router.get(ticket_path, responses=refusals)
    async def ticket(ticket_id: TicketId, agent: Agent, desk: DeskDep) -> dict[str, Any]:
        """One of the agent's tenants' tickets with its handoff packet (404 for another's)."""
        found = await desk.get(ticket_id, tenants=agent.tenants)
        return {"ticket": found.as_json(), "packet": await build_packet(desk.pg, found)}

    @router.post(f"{ticket_path}/claim", responses=refusals)
    async def claim(
        ticket_id: TicketId, agent: Agent, desk: DeskDep, bus: Bus, feed: Feed
    ) -> dict[str, Any]:
        """Take a queued ticket; the customer is told a person has joined."""
        claimed = await desk.claim(ticket_id, agent.agent_id, tenants=agent.tenants)
        await say(
            bus,
            claimed,
            Role.SYSTEM,
            f"{agent.agent_id} from our team has joined the conversation.",
            ["agent_joined"],
        )
        return await changed(feed, claimed)

    @router.post(f"{ticket_path}/resolve", responses=refusals)
    async def resolve(
        ticket_id: TicketId,
        agent: Agent,
        desk: DeskDep,
        bus: Bus,
        feed: Feed,
        body: Resolve | None = None,
    ) -> dict[str, Any]:
        """Close the ticket with a disposition; the bot takes the conversation's next turns."""
        resolved = await desk.resolve(ticket_id, agent.agent_id, tenants=agent.tenants)
        disposition = body.disposition if body is not None else "resolved"
        await bus.publish(agent_closed(resolved, agent.agent_id, disposition))
        return await changed(feed, resolved)

    @router.post(f"{ticket_path}/handback", responses=refusals)
    async def handback(
        ticket_id: TicketId, agent: Agent, desk: DeskDep, feed: Feed
    ) -> dict[str, Any]:
        """Give the conversation back to the bot without resolving the customer's issue."""
        handed = await desk.hand_back(ticket_id, agent.agent_id, tenants=agent.tenants)
        return await changed(feed, handed)

    @router.post(f"{ticket_path}/transfer", responses=error_responses(400, 401, 404, 409, 422))
    async def transfer(
        ticket_id: TicketId, body: Transfer, agent: Agent, auth: Auth, desk: DeskDep, feed: Feed
    ) -> dict[str, Any]:
        """Hand the ticket to another agent who works for the ticket's tenant."""
        found = await desk.get(ticket_id, tenants=agent.tenants)
        # Another tenant's agent reads as unknown: its name is not this tenant's business.
        if body.to_agent not in auth.agents or found.tenant not in auth.tenants_of(body.to_agent):
            raise ApiError(400, "unknown_agent", f"no agent {body.to_agent!r}")
        moved = await desk.transfer(
            ticket_id, agent.agent_id, body.to_agent, tenants=(found.tenant,)
        )
        return await changed(feed, moved)

    @router.post(
        f"{ticket_path}/reply", status_code=202, responses=error_responses(400, 401, 404, 409, 422)
    )
    async def reply(
        ticket_id: TicketId, body: AgentReply, agent: Agent, desk: DeskDep, bus: Bus
    ) -> ReplySent:
        """Send the customer a message from the agent holding the ticket."""
        found = await desk.get(ticket_id, tenants=agent.tenants)
        if found.status != "claimed" or found.claimed_by != agent.agent_id:
            raise ApiError(409, "conflict", "claim the ticket before replying")
        return ReplySent(
            reply_id=await say(bus, found, Role.AGENT, body.text, [f"agent:{agent.agent_id}"])
        )

    return router


def sign_out_router() -> APIRouter:
    """Signing an agent out of every console at once."""
    router = APIRouter(prefix="/v1/agent", tags=["agents"])

    @router.post("/sign-out-everywhere", responses=error_responses(401, 503))
    async def sign_out_everywhere(
        agent: Agent, auth: Auth, infra: Annotated[Infra, Depends(requires(Infra))]
    ) -> SignedOut:
        """Void every token of this agent, on every replica (a lost laptop, a shared screen).

        Open consoles, this one included, are disconnected within the token refresh interval
        (`CBD_ESCALATION_TOKEN_VERSION_REFRESH_S`) and must sign in again.
        """
        version = await auth.revoke(infra.require_pg(), agent.agent_id)
        return SignedOut(agent_id=agent.agent_id, token_version=version)

    return router


def live_router(recheck_s: float = 2.0) -> APIRouter:
    """The consoles' live feed; each socket's token is checked again every `recheck_s`."""
    router = APIRouter()

    @router.websocket("/v1/agent/ws")
    async def live(
        ws: WebSocket,
        hub: Annotated[AgentHub, Depends(requires(AgentHub))],
        auth: Auth,
        token: Annotated[str, Query()] = "",
    ) -> None:
        """WS /v1/agent/ws?token=...: the agent's tenants' queue changes and messages."""
        await ws.accept()
        verified = auth.verify(token)
        if verified is None:
            await ws.send_json({"type": "error", "error": "unauthorized"})
            await ws.close(code=4401)
            return
        hub.add(ws, verified.tenants)
        try:
            while True:
                # The token is checked again while the socket is open, not only at connect:
                # a revoked (signed out everywhere, password changed) or expired token must
                # not keep hearing the queue and customers' messages.
                try:
                    async with asyncio.timeout(recheck_s):
                        await ws.receive_text()
                except TimeoutError:
                    if auth.verify(token) is None:
                        await ws.send_json({"type": "error", "error": "unauthorized"})
                        await ws.close(code=4401)
                        return
        except WebSocketDisconnect:
            pass
        finally:
            hub.remove(ws)

    return router
