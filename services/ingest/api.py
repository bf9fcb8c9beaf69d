"""The HTTP and WebSocket edge: validate, publish turn.received, stream replies back."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import redis.asyncio as aioredis
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.ingest.delivery import ConnectionHub
from services.ingest.settings import IngestSettings
from shared.events import (
    MAX_MESSAGE_CHARS,
    Channel,
    CustomerMessage,
    Identifier,
    TurnReceived,
    TurnReceivedEvent,
    utcnow,
)
from shared.kafka import EventBus
from shared.topics import Topic

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

MESSAGES = Counter(
    "cbd_ingest_messages_total",
    "Customer messages at the edge, by outcome.",
    ["channel", "outcome"],
)

_identifier = TypeAdapter(Identifier)

DEDUPE_TTL_S = 24 * 3600


class IncomingMessage(BaseModel):
    """Body of POST /v1/conversations/{conversation_id}/messages."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    customer_id: Identifier
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]
    channel: Channel = Channel.API
    client_message_id: Annotated[str, Field(max_length=128)] | None = None


class ChatFrame(BaseModel):
    """A frame the chat client sends over the WebSocket."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    type: Annotated[str, StringConstraints(pattern="^message$")]
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]
    client_message_id: Annotated[str, Field(max_length=128)] | None = None


class EdgeError(Exception):
    """A request the edge refuses, with the status and the words to say why."""

    def __init__(self, status: int, error: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as field/problem pairs a client developer can act on."""
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "problem": err["msg"]}
        for err in exc.errors()
    ]


def invalid(exc: ValidationError, what: str) -> EdgeError:
    """A 422 naming each field that failed and why."""
    details = validation_details(exc)
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:3])
    return EdgeError(422, "invalid_request", f"invalid {what}: {summary}", details)


def check_identifier(value: str, name: str) -> str:
    """Validate an id from the URL or query string."""
    try:
        return _identifier.validate_python(value)
    except ValidationError as exc:
        raise EdgeError(
            400,
            f"invalid_{name}",
            f"{name} must be 1-128 characters of letters, digits and _ . : @ -, "
            "starting with a letter or digit",
        ) from exc


@dataclass(frozen=True)
class Accepted:
    """A message the edge took responsibility for."""

    turn_id: str
    event_id: str
    trace_id: str
    duplicate: bool = False
    """True when this client message id was accepted before and nothing new was published."""


class IngestAPI:
    """Request handlers; the bus and Redis are bound once the service has started."""

    def __init__(self, settings: IngestSettings, hub: ConnectionHub) -> None:
        self.settings = settings
        self.hub = hub
        self.bus: EventBus | None = None
        self.redis: aioredis.Redis | None = None

    def routes(self) -> list[BaseRoute]:
        """The edge's routes."""
        return [
            Route("/", self.chat_page, methods=["GET"]),
            Route(
                "/v1/conversations/{conversation_id}/messages",
                self.post_message,
                methods=["POST"],
            ),
            WebSocketRoute("/v1/conversations/{conversation_id}/ws", self.chat_socket),
        ]

    async def chat_page(self, _: Request) -> Response:
        """The customer web chat."""
        return FileResponse(STATIC / "chat.html", media_type="text/html")

    async def accept(
        self,
        conversation_id: str,
        customer_id: str,
        channel: Channel,
        text: str,
        client_message_id: str | None = None,
    ) -> Accepted:
        """Publish a validated customer message as turn.received, once per client message id.

        Clients resend a message whose acknowledgement they never saw (a dropped connection);
        the id they gave it makes the resend a no-op instead of a second turn.
        """
        if self.bus is None:
            raise EdgeError(503, "starting", "the service is starting; try again shortly")
        event = self._turn_event(conversation_id, customer_id, channel, text)
        accepted = Accepted(
            turn_id=str(event.payload.message.turn_id),
            event_id=str(event.event_id),
            trace_id=event.trace_id,
        )
        claim = None
        if client_message_id is not None and self.redis is not None:
            claim = f"{self.settings.redis.key_prefix}cmid:{conversation_id}:{client_message_id}"
            earlier = await self._claim(claim, accepted)
            if earlier is not None:
                MESSAGES.labels(channel.value, "duplicate").inc()
                return earlier
        try:
            await self.bus.publish(Topic.TURN_RECEIVED, event)
        except Exception as exc:
            MESSAGES.labels(channel.value, "broker_error").inc()
            log.exception("could not publish turn.received")
            if claim is not None and self.redis is not None:
                await self.redis.delete(claim)
            raise EdgeError(
                503, "unavailable", "the message could not be queued; please retry"
            ) from exc
        MESSAGES.labels(channel.value, "accepted").inc()
        return accepted

    async def _claim(self, key: str, accepted: Accepted) -> Accepted | None:
        """Record the client message id; return the earlier acceptance if there was one."""
        assert self.redis is not None
        value = json.dumps(
            {
                "turn_id": accepted.turn_id,
                "event_id": accepted.event_id,
                "trace_id": accepted.trace_id,
            }
        )
        try:
            if await self.redis.set(key, value, nx=True, ex=DEDUPE_TTL_S):
                return None
            earlier = await self.redis.get(key)
        except Exception:
            # Without Redis a resend may become a second turn; refusing the message is worse.
            log.warning("deduplication unavailable; accepting without it", exc_info=True)
            return None
        if earlier is None:
            return None
        return Accepted(**json.loads(earlier), duplicate=True)

    @staticmethod
    def _turn_event(
        conversation_id: str, customer_id: str, channel: Channel, text: str
    ) -> TurnReceivedEvent:
        now = utcnow()
        return TurnReceivedEvent.create(
            conversation_id=conversation_id,
            customer_id=customer_id,
            channel=channel,
            payload=TurnReceived(
                message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=now)
            ),
        )

    async def post_message(self, request: Request) -> Response:
        """POST /v1/conversations/{conversation_id}/messages."""
        try:
            conversation_id = check_identifier(
                request.path_params["conversation_id"], "conversation_id"
            )
            body = await self._json_body(request)
            try:
                incoming = IncomingMessage.model_validate(body)
            except ValidationError as exc:
                raise invalid(exc, "message") from exc
            accepted = await self.accept(
                conversation_id,
                incoming.customer_id,
                incoming.channel,
                incoming.text,
                incoming.client_message_id,
            )
        except EdgeError as err:
            if err.status < 500:
                MESSAGES.labels("api", "rejected").inc()
            return JSONResponse(err.body(), status_code=err.status)
        return JSONResponse(
            {
                "status": "accepted",
                "conversation_id": conversation_id,
                "turn_id": accepted.turn_id,
                "event_id": accepted.event_id,
                "trace_id": accepted.trace_id,
                "client_message_id": incoming.client_message_id,
                "duplicate": accepted.duplicate,
                "stream": f"/v1/conversations/{conversation_id}/ws",
            },
            status_code=202,
        )

    async def _json_body(self, request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise EdgeError(415, "unsupported_media_type", "send the message as application/json")
        declared = request.headers.get("content-length")
        limit = self.settings.max_body_bytes
        too_large = EdgeError(413, "too_large", f"body exceeds {limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise too_large
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise EdgeError(400, "malformed_json", f"body is not valid JSON: {exc}") from exc

    async def chat_socket(self, ws: WebSocket) -> None:
        """WS /v1/conversations/{conversation_id}/ws?customer_id=...: chat with streaming."""
        await ws.accept()
        try:
            conversation_id = check_identifier(ws.path_params["conversation_id"], "conversation_id")
            customer_id = check_identifier(ws.query_params.get("customer_id", ""), "customer_id")
        except EdgeError as err:
            await ws.send_json({"type": "error", "status": err.status, **err.body()})
            await ws.close(code=4400 if err.status < 500 else 1011)
            return
        self.hub.add(conversation_id, ws)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    MESSAGES.labels(Channel.WEB.value, "rejected").inc()
                    await ws.send_json(
                        {
                            "type": "error",
                            "status": 400,
                            "error": "binary_frame",
                            "message": "send JSON in text frames",
                        }
                    )
                    continue
                await self._on_frame(ws, conversation_id, customer_id, raw)
        except WebSocketDisconnect:
            pass
        finally:
            self.hub.remove(conversation_id, ws)

    async def _on_frame(
        self, ws: WebSocket, conversation_id: str, customer_id: str, raw: str
    ) -> None:
        client_message_id: str | None = None
        try:
            try:
                frame = ChatFrame.model_validate_json(raw)
            except ValidationError as exc:
                raise invalid(exc, "frame") from exc
            client_message_id = frame.client_message_id
            accepted = await self.accept(
                conversation_id, customer_id, Channel.WEB, frame.text, client_message_id
            )
        except EdgeError as err:
            if err.status < 500:
                MESSAGES.labels(Channel.WEB.value, "rejected").inc()
            await ws.send_json(
                {
                    "type": "error",
                    "status": err.status,
                    "client_message_id": client_message_id,
                    **err.body(),
                }
            )
            return
        await ws.send_json(
            {
                "type": "accepted",
                "turn_id": accepted.turn_id,
                "event_id": accepted.event_id,
                "client_message_id": client_message_id,
                "duplicate": accepted.duplicate,
            }
        )
