"""The agents' HTTP and WebSocket API, and the console page."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.escalation.auth import AgentAuth, AgentToken
from services.escalation.desk import Desk, Ticket, TicketConflict, TicketNotFound
from services.escalation.live import AgentHub
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
from shared.kafka import EventBus
from shared.topics import Topic

STATIC = Path(__file__).parent / "static"

Handler = Callable[[Request, AgentToken], Awaitable[Response]]


class Login(BaseModel):
    """Body of POST /v1/agent/login."""

    model_config = ConfigDict(extra="forbid")
    agent_id: str
    password: str


class AgentReply(BaseModel):
    """Body of POST /v1/agent/tickets/{id}/reply."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]


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


def error(status: int, code: str, message: str) -> JSONResponse:
    """A 4xx/5xx with a machine code and a sentence."""
    return JSONResponse({"error": code, "message": message}, status_code=status)


class AgentAPI:
    """Routes for agents; the desk and bus are bound once the service has started."""

    def __init__(self, auth: AgentAuth, hub: AgentHub) -> None:
        self.auth = auth
        self.hub = hub
        self.desk: Desk | None = None
        self.bus: EventBus | None = None

    def routes(self) -> list[BaseRoute]:
        """The console page, the agent API and the live socket."""
        ticket = "/v1/agent/tickets/{ticket_id}"
        return [
            Route("/console", self.console, methods=["GET"]),
            Route("/v1/agent/login", self.login, methods=["POST"]),
            Route("/v1/agent/queue", self._authed(self.queue), methods=["GET"]),
            Route(ticket, self._authed(self.ticket), methods=["GET"]),
            Route(f"{ticket}/claim", self._authed(self.claim), methods=["POST"]),
            Route(f"{ticket}/reply", self._authed(self.reply), methods=["POST"]),
            Route(f"{ticket}/resolve", self._authed(self.resolve), methods=["POST"]),
            Route(f"{ticket}/handback", self._authed(self.handback), methods=["POST"]),
            Route(f"{ticket}/transfer", self._authed(self.transfer), methods=["POST"]),
            WebSocketRoute("/v1/agent/ws", self.live),
        ]

    async def console(self, _: Request) -> Response:
        """The agent console page."""
        return FileResponse(STATIC / "console.html", media_type="text/html")

    async def login(self, request: Request) -> Response:
        """Exchange an agent id and password for a bearer token."""
        try:
            body = Login.model_validate(json.loads(await request.body()))
        except (ValueError, ValidationError):
            return error(400, "invalid_request", 'send {"agent_id": ..., "password": ...}')
        token = self.auth.login(body.agent_id, body.password)
        if token is None:
            return error(401, "unauthorized", "unknown agent or wrong password")
        verified = self.auth.verify(token)
        assert verified is not None
        return JSONResponse({"token": token, "agent_id": verified.agent_id})

    def _authed(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            agent = self.auth.verify(token) if scheme.lower() == "bearer" else None
            if agent is None:
                return error(401, "unauthorized", "sign in: Authorization: Bearer <token>")
            if self.desk is None or self.bus is None:
                return error(503, "starting", "the service is starting; try again shortly")
            try:
                return await handler(request, agent)
            except TicketNotFound:
                return error(404, "not_found", "no such ticket")
            except TicketConflict as exc:
                return error(409, "conflict", str(exc))

        return endpoint

    def _desk(self) -> Desk:
        assert self.desk is not None
        return self.desk

    @staticmethod
    def _ticket_id(request: Request) -> uuid.UUID:
        try:
            return uuid.UUID(request.path_params["ticket_id"])
        except ValueError as exc:
            raise TicketNotFound(request.path_params["ticket_id"]) from exc

    async def queue(self, _: Request, __: AgentToken) -> Response:
        """Open tickets, most urgent first."""
        tickets = await self._desk().queue()
        return JSONResponse({"tickets": [t.as_json() for t in tickets]})

    async def ticket(self, request: Request, _: AgentToken) -> Response:
        """One ticket with its handoff packet."""
        desk = self._desk()
        found = await desk.get(self._ticket_id(request))
        return JSONResponse(
            {"ticket": found.as_json(), "packet": await build_packet(desk.pg, found)}
        )

    async def _changed(self, ticket: Ticket) -> Response:
        await self.hub.broadcast({"type": "queue_changed"})
        return JSONResponse(ticket.as_json())

    async def claim(self, request: Request, agent: AgentToken) -> Response:
        """Take a queued ticket; the customer is told a person has joined."""
        claimed = await self._desk().claim(self._ticket_id(request), agent.agent_id)
        await self._say(
            claimed,
            Role.SYSTEM,
            f"{agent.agent_id} from our team has joined the conversation.",
            ["agent_joined"],
        )
        return await self._changed(claimed)

    async def _say(self, ticket: Ticket, author: Role, text: str, flags: list[str]) -> uuid.UUID:
        """Publish a message to the ticket's customer, on their channel."""
        reply_id = uuid.uuid4()
        event = ReplyGeneratedEvent.create(
            conversation_id=ticket.conversation_id,
            customer_id=ticket.customer_id,
            channel=Channel(ticket.channel),
            payload=ReplyGenerated(
                turn_id=ticket.last_turn_id or ticket.ticket_id,
                reply_id=reply_id,
                author=author,
                text=text,
                flags=flags,
            ),
        )
        assert self.bus is not None
        await self.bus.publish(Topic.REPLY_GENERATED, event)
        return reply_id

    async def resolve(self, request: Request, agent: AgentToken) -> Response:
        """Close the ticket with a disposition; the bot takes the conversation's next turns."""
        try:
            raw = await request.body()
            body = Resolve.model_validate(json.loads(raw) if raw.strip() else {})
        except (ValueError, ValidationError):
            return error(400, "invalid_request", 'send {"disposition": "resolved"} or nothing')
        resolved = await self._desk().resolve(self._ticket_id(request), agent.agent_id)
        assert self.bus is not None
        await self.bus.publish(
            Topic.CONVERSATION_CLOSED, agent_closed(resolved, agent.agent_id, body.disposition)
        )
        return await self._changed(resolved)

    async def handback(self, request: Request, agent: AgentToken) -> Response:
        """Give the conversation back to the bot."""
        return await self._changed(
            await self._desk().hand_back(self._ticket_id(request), agent.agent_id)
        )

    async def transfer(self, request: Request, agent: AgentToken) -> Response:
        """Hand the ticket to another agent."""
        try:
            body = Transfer.model_validate(json.loads(await request.body()))
        except (ValueError, ValidationError):
            return error(400, "invalid_request", 'send {"to_agent": ...}')
        if body.to_agent not in self.auth.agents:
            return error(400, "unknown_agent", f"no agent {body.to_agent!r}")
        return await self._changed(
            await self._desk().transfer(self._ticket_id(request), agent.agent_id, body.to_agent)
        )

    async def reply(self, request: Request, agent: AgentToken) -> Response:
        """Send the customer a message from the agent holding the ticket."""
        try:
            body = AgentReply.model_validate(json.loads(await request.body()))
        except (ValueError, ValidationError):
            return error(422, "invalid_request", 'send {"text": ...} with 1-4000 characters')
        found = await self._desk().get(self._ticket_id(request))
        if found.status != "claimed" or found.claimed_by != agent.agent_id:
            return error(409, "conflict", "claim the ticket before replying")
        reply_id = await self._say(found, Role.AGENT, body.text, [f"agent:{agent.agent_id}"])
        return JSONResponse({"reply_id": str(reply_id)}, status_code=202)

    async def live(self, ws: WebSocket) -> None:
        """WS /v1/agent/ws?token=...: queue changes and messages as they happen."""
        await ws.accept()
        if self.auth.verify(ws.query_params.get("token", "")) is None:
            await ws.send_json({"type": "error", "error": "unauthorized"})
            await ws.close(code=4401)
            return
        self.hub.add(ws)
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            self.hub.remove(ws)


def message_frame(
    conversation_id: str, role: str, text: str, at: str, emotion: Any
) -> dict[str, Any]:
    """A transcript line for the consoles."""
    return {
        "type": "message",
        "conversation_id": conversation_id,
        "role": role,
        "text": text,
        "at": at,
        "emotion": emotion,
    }
