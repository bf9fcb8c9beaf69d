"""The HTTP and WebSocket edge: validate, publish turn.received, stream replies back."""

from __future__ import annotations

import html
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import redis.asyncio as aioredis
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.ingest.delivery import ConnectionHub, Fanout, FrameId, parse_frame_id
from services.ingest.edge import Caller, EdgeGuard, Refused
from services.ingest.settings import IngestSettings
from shared.events import (
    MAX_MESSAGE_CHARS,
    Channel,
    CustomerMessage,
    Envelope,
    Feedback,
    FeedbackReceivedEvent,
    Identifier,
    TurnReceived,
    TurnReceivedEvent,
    utcnow,
)
from shared.kafka import EventBus
from shared.topics import Topic

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

WIDGET_DEMO = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo shop - Care-by-Design widget</title>
<style>
  /* Deliberately loud host styles: the widget's Shadow DOM must not pick them up. */
  body { font: 18px/1.6 Georgia, serif; color: #1d3557; margin: 0 auto; max-width: 44rem;
         padding: 2rem 1rem; }
  button { background: hotpink; border-radius: 0; font-size: 30px; }
</style>
</head>
<body>
<main>
  <h1>Demo shop</h1>
  <p>An ordinary page. The chat in the corner comes from one script tag:</p>
  <pre>&lt;script src="/widget.js" data-key="..." async&gt;&lt;/script&gt;</pre>
  <p><a href="#top">A link on the host page</a> <button type="button">A host button</button></p>
</main>
<script src="/widget.js"{key_attr} async></script>
</body>
</html>
"""

MESSAGES = Counter(
    "cbd_ingest_messages_total",
    "Customer messages at the edge, by outcome.",
    ["channel", "outcome"],
)

FEEDBACK = Counter(
    "cbd_ingest_feedback_total",
    "Satisfaction ratings at the edge (widget and POST .../feedback), by outcome.",
    ["channel", "outcome"],
)

_identifier = TypeAdapter(Identifier)

M = TypeVar("M", bound=BaseModel)

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


Rating = Annotated[int, Field(ge=1, le=5, strict=True)]
"""1-5, a JSON integer: no "4", 4.5 or true sneaking in as a rating."""
Comment = Annotated[str, StringConstraints(max_length=2000)]


class RatingFrame(BaseModel):
    """The end-of-chat satisfaction rating the widget sends over the WebSocket."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    type: Literal["rating"]
    rating: Rating
    comment: Comment = ""
    reply_id: uuid.UUID | None = None
    """Set when one reply is rated rather than the whole conversation."""
    client_message_id: Annotated[str, Field(max_length=128)] | None = None


class IncomingFeedback(BaseModel):
    """Body of POST /v1/conversations/{conversation_id}/feedback."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    customer_id: Identifier
    rating: Rating
    comment: Comment = ""
    channel: Channel = Channel.API
    reply_id: uuid.UUID | None = None
    client_message_id: Annotated[str, Field(max_length=128)] | None = None


def frame_type(raw: str) -> Any:
    """The `type` of a JSON frame, or None when it has none (the frame's model says why)."""
    try:
        frame = json.loads(raw)
    except ValueError:
        return None
    return frame.get("type") if isinstance(frame, dict) else None


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


def resume_point(after: str | None) -> FrameId | None:
    """The `after` query parameter: the last frame id the client saw, `0` for all buffered."""
    if after is None:
        return None
    try:
        return parse_frame_id(after)
    except ValueError as exc:
        raise EdgeError(
            400,
            "invalid_after",
            "after must be a frame id from this conversation (like 1732380000000-0), or 0",
        ) from exc


def _client_message_id(raw: str) -> str | None:
    """The frame's client_message_id when it has a usable one, even if the rest is invalid."""
    try:
        frame = json.loads(raw)
    except ValueError:
        return None
    value = frame.get("client_message_id") if isinstance(frame, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 else None


@dataclass(frozen=True)
class Rated:
    """A rating the edge took responsibility for."""

    event_id: str
    duplicate: bool = False


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
        self.guard = EdgeGuard(settings)
        self.fanout: Fanout | None = None
        """Buffers and fans out frames with ids; without it frames go to the socket directly."""

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
            Route("/widget.js", self.widget_script, methods=["GET"]),
            Route("/widget-demo", self.widget_demo, methods=["GET"]),
            Route(
                "/v1/conversations/{conversation_id}/feedback",
                self.post_feedback,
                methods=["POST"],
            ),
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
        *,
        tenant: str = "default",
    ) -> Accepted:
        """Publish a validated customer message as turn.received, once per client message id.

        Clients resend a message whose acknowledgement they never saw (a dropped connection);
        the id they gave it makes the resend a no-op instead of a second turn.
        """
        if self.bus is None:
            raise EdgeError(503, "starting", "the service is starting; try again shortly")
        if channel in (Channel.WEB, Channel.API):
            # Messaging and voice are limited at their webhooks, before burst merging.
            try:
                await self.guard.rate_limit(channel.value, tenant, customer_id)
            except Refused as err:
                raise EdgeError(err.status, err.error, err.message) from err
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
            await self._publish_claimed(
                Topic.TURN_RECEIVED,
                event,
                claim,
                "the message could not be queued; please retry",
            )
        except EdgeError:
            MESSAGES.labels(channel.value, "broker_error").inc()
            raise
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
        earlier = await self._claim_once(key, value)
        return None if earlier is None else Accepted(**json.loads(earlier), duplicate=True)

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

    def _caller(self, request: Request) -> Caller:
        """The tenant behind a REST request, from its X-API-Key (or bearer) header."""
        key = request.headers.get("x-api-key")
        if not key:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token if scheme.lower() == "bearer" else None
        try:
            return self.guard.api_key(key)
        except Refused as err:
            raise EdgeError(err.status, err.error, err.message) from err

    def _widget_caller(self, ws: WebSocket, customer_id: str) -> Caller:
        """The tenant behind a widget connection: its key, page origin and signed identity."""
        try:
            return self.guard.widget(
                ws.query_params.get("key"),
                ws.headers.get("origin"),
                customer_id,
                ws.query_params.get("customer_hash"),
            )
        except Refused as err:
            raise EdgeError(err.status, err.error, err.message) from err

    async def _read(self, request: Request, model: type[M], what: str) -> tuple[Caller, str, M]:
        """Who calls, which conversation, and the JSON body validated as `model`."""
        caller = self._caller(request)
        conversation_id = check_identifier(
            request.path_params["conversation_id"], "conversation_id"
        )
        body = await self._json_body(request)
        try:
            return caller, conversation_id, model.model_validate(body)
        except ValidationError as exc:
            raise invalid(exc, what) from exc

    async def post_message(self, request: Request) -> Response:
        """POST /v1/conversations/{conversation_id}/messages."""
        try:
            caller, conversation_id, incoming = await self._read(
                request, IncomingMessage, "message"
            )
            accepted = await self.accept(
                conversation_id,
                incoming.customer_id,
                incoming.channel,
                incoming.text,
                incoming.client_message_id,
                tenant=caller.tenant,
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
            after = resume_point(ws.query_params.get("after"))
            caller = self._widget_caller(ws, customer_id)
        except EdgeError as err:
            await ws.send_json({"type": "error", "status": err.status, **err.body()})
            await ws.close(code=4000 + err.status if err.status < 500 else 1011)
            return
        self.hub.add(conversation_id, ws, after=after)
        try:
            if after is not None and not await self._resume(ws, conversation_id, after):
                return
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
                await self._on_frame(ws, conversation_id, customer_id, raw, caller.tenant)
        except WebSocketDisconnect:
            pass
        finally:
            self.hub.remove(conversation_id, ws)

    async def _resume(self, ws: WebSocket, conversation_id: str, after: FrameId) -> bool:
        """Replay the buffered frames after `after`, then go live; False if the socket is gone.

        The socket joined the hub before the buffer is read, so a frame published meanwhile is
        held, not lost; the hub sends each frame id once (server-side deduplication).
        """
        frames: list[dict[str, Any]] = []
        complete = self.fanout is not None
        if self.fanout is not None:
            try:
                frames = await self.fanout.replay(conversation_id, after)
            except Exception:
                # Live frames still flow; the client is told the replay may have gaps.
                log.warning("frame buffer unavailable; resuming without replay", exc_info=True)
                complete = False
        try:
            await self.hub.resume(conversation_id, ws, frames, complete=complete)
        except Exception:
            return False
        return True

    async def _to_conversation(
        self, ws: WebSocket, conversation_id: str, frame: dict[str, Any]
    ) -> None:
        """Send a frame to every socket of the conversation, buffered and with a frame id.

        Without the buffer (Redis down, or not wired) the frame still reaches this socket.
        """
        if self.fanout is not None:
            try:
                await self.fanout.publish(conversation_id, frame)
                return
            except Exception:
                log.warning("frame buffer unavailable; answering this socket only", exc_info=True)
        await ws.send_json(frame)

    async def _on_frame(
        self, ws: WebSocket, conversation_id: str, customer_id: str, raw: str, tenant: str
    ) -> None:
        if frame_type(raw) == "rating":
            await self._on_rating(ws, conversation_id, customer_id, raw)
            return
        client_message_id: str | None = None
        try:
            try:
                frame = ChatFrame.model_validate_json(raw)
            except ValidationError as exc:
                raise invalid(exc, "frame") from exc
            client_message_id = frame.client_message_id
            accepted = await self.accept(
                conversation_id,
                customer_id,
                Channel.WEB,
                frame.text,
                client_message_id,
                tenant=tenant,
            )
        except EdgeError as err:
            if err.status < 500:
                MESSAGES.labels(Channel.WEB.value, "rejected").inc()
            await _send_error(ws, err, client_message_id)
            return
        # To every socket of the conversation, with the text: another tab, or this page
        # after a reload, replays the customer's side of the conversation from the buffer.
        await self._to_conversation(
            ws,
            conversation_id,
            {
                "type": "accepted",
                "turn_id": accepted.turn_id,
                "event_id": accepted.event_id,
                "client_message_id": client_message_id,
                "duplicate": accepted.duplicate,
                "text": frame.text,
            },
        )

    async def _on_rating(
        self, ws: WebSocket, conversation_id: str, customer_id: str, raw: str
    ) -> None:
        """A `rating` frame: publish feedback.received and acknowledge, or say what is wrong."""
        client_message_id = _client_message_id(raw)
        try:
            try:
                frame = RatingFrame.model_validate_json(raw)
            except ValidationError as exc:
                raise invalid(exc, "rating") from exc
            rated = await self.rate(
                conversation_id,
                customer_id,
                Channel.WEB,
                frame.rating,
                frame.comment,
                frame.reply_id,
                frame.client_message_id,
            )
        except EdgeError as err:
            if err.status < 500:
                FEEDBACK.labels(Channel.WEB.value, "rejected").inc()
            await _send_error(ws, err, client_message_id)
            return
        await ws.send_json(
            {
                "type": "rating_accepted",
                "event_id": rated.event_id,
                "client_message_id": client_message_id,
                "duplicate": rated.duplicate,
            }
        )

    async def rate(
        self,
        conversation_id: str,
        customer_id: str,
        channel: Channel,
        rating: int,
        comment: str,
        reply_id: uuid.UUID | None = None,
        client_message_id: str | None = None,
    ) -> Rated:
        """Publish a customer's rating as feedback.received, once per client message id."""
        if self.bus is None:
            raise EdgeError(503, "starting", "the service is starting; try again shortly")
        event = FeedbackReceivedEvent.create(
            conversation_id=conversation_id,
            customer_id=customer_id,
            channel=channel,
            payload=Feedback(rating=rating, comment=comment, source="customer", reply_id=reply_id),
        )
        claim = None
        if client_message_id is not None and self.redis is not None:
            # Under cmid:{conversation}:* so erasing the customer forgets it with the rest.
            prefix = self.settings.redis.key_prefix
            claim = f"{prefix}cmid:{conversation_id}:rating:{client_message_id}"
            earlier = await self._claim_once(claim, str(event.event_id))
            if earlier is not None:
                FEEDBACK.labels(channel.value, "duplicate").inc()
                return Rated(event_id=earlier, duplicate=True)
        try:
            await self._publish_claimed(
                Topic.FEEDBACK_RECEIVED,
                event,
                claim,
                "the rating could not be recorded; please retry",
            )
        except EdgeError:
            FEEDBACK.labels(channel.value, "broker_error").inc()
            raise
        FEEDBACK.labels(channel.value, "accepted").inc()
        return Rated(event_id=str(event.event_id))

    async def _publish_claimed(
        self, topic: Topic, event: Envelope, claim: str | None, refusal: str
    ) -> None:
        """Publish; on failure release the client message id, so the client's retry is new."""
        assert self.bus is not None
        try:
            await self.bus.publish(topic, event)
        except Exception as exc:
            log.exception("could not publish %s", topic.value)
            if claim is not None and self.redis is not None:
                await self.redis.delete(claim)
            raise EdgeError(503, "unavailable", refusal) from exc

    async def _claim_once(self, key: str, value: str) -> str | None:
        """Set `key` unless it exists; return the earlier value when it did."""
        assert self.redis is not None
        try:
            if await self.redis.set(key, value, nx=True, ex=DEDUPE_TTL_S):
                return None
            earlier = await self.redis.get(key)
        except Exception:
            # Without Redis a resend may be taken twice; refusing the customer is worse.
            log.warning("deduplication unavailable; accepting without it", exc_info=True)
            return None
        return None if earlier is None else str(earlier)

    async def post_feedback(self, request: Request) -> Response:
        """POST /v1/conversations/{conversation_id}/feedback: a rating from any channel."""
        try:
            _, conversation_id, incoming = await self._read(request, IncomingFeedback, "feedback")
            rated = await self.rate(
                conversation_id,
                incoming.customer_id,
                incoming.channel,
                incoming.rating,
                incoming.comment,
                incoming.reply_id,
                incoming.client_message_id,
            )
        except EdgeError as err:
            if err.status < 500:
                FEEDBACK.labels(Channel.API.value, "rejected").inc()
            return JSONResponse(err.body(), status_code=err.status)
        return JSONResponse(
            {
                "status": "accepted",
                "conversation_id": conversation_id,
                "event_id": rated.event_id,
                "client_message_id": incoming.client_message_id,
                "duplicate": rated.duplicate,
            },
            status_code=202,
        )

    async def widget_script(self, _: Request) -> Response:
        """The embeddable web chat widget (one <script> tag on any site)."""
        return FileResponse(
            STATIC / "widget.js",
            media_type="text/javascript",
            headers={
                # Unversioned URL: short cache so a fix reaches sites within minutes; the
                # ETag FileResponse sets makes the revalidation cheap.
                "Cache-Control": "public, max-age=300",
                "X-Content-Type-Options": "nosniff",
                # Sites that isolate themselves (COEP) may still load it.
                "Cross-Origin-Resource-Policy": "cross-origin",
            },
        )

    async def widget_demo(self, _: Request) -> Response:
        """An ordinary host page with nothing but the widget's script tag added."""
        key = self.settings.widget_demo_key
        key_attr = f' data-key="{html.escape(key)}"' if key else ""
        return HTMLResponse(
            WIDGET_DEMO.replace("{key_attr}", key_attr), headers={"Cache-Control": "no-store"}
        )


async def _send_error(ws: WebSocket, err: EdgeError, client_message_id: str | None) -> None:
    """An error frame naming the client message it answers; the socket stays open."""
    await ws.send_json(
        {
            "type": "error",
            "status": err.status,
            "client_message_id": client_message_id,
            **err.body(),
        }
    )
