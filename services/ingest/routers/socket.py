"""WS /v1/conversations/{conversation_id}/ws: the customer's live chat, with resume.

The protocol is in docs/architecture.md ("Where replies go back"). Each frame is checked for
size and nesting before it is parsed, every frame spends the connection's budget, and the
message or rating in it goes through the intake like any other channel's.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.ingest.delivery import ConnectionHub, Fanout, FrameId, parse_frame_id
from services.ingest.edge import REJECTIONS, ConnectionBudget, json_depth_exceeds
from services.ingest.intake import (
    ENDS,
    FEEDBACK,
    MESSAGES,
    ClientMessageId,
    Comment,
    CustomerText,
    Intake,
)
from services.ingest.ownership import Party
from services.ingest.routers.deps import (
    GuardDep,
    HubDep,
    IntakeDep,
    SettingsDep,
    client_address,
)
from shared.events import Channel, Identifier
from shared.http import ApiError, provided, validation_error

log = logging.getLogger(__name__)

router = APIRouter(tags=["chat"])

_identifier: TypeAdapter[str] = TypeAdapter(Identifier)


class ChatFrame(BaseModel):
    """A message the chat client sends."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["message"]
    text: CustomerText
    client_message_id: ClientMessageId | None = None


class RatingFrame(BaseModel):
    """The end-of-chat satisfaction rating the widget sends."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["rating"]
    rating: Annotated[int, Field(ge=1, le=5, strict=True)]
    comment: Comment = ""
    reply_id: uuid.UUID | None = None
    client_message_id: ClientMessageId | None = None


class EndFrame(BaseModel):
    """The customer ends the chat (the widget's "End chat")."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["end"]
    client_message_id: ClientMessageId | None = None


def ended_frame(event_id: str, *, duplicate: bool, client_message_id: str | None) -> dict[str, Any]:
    """What every socket of a conversation hears when its customer ends it."""
    return {
        "type": "ended",
        "reason": "ended",
        "event_id": event_id,
        "duplicate": duplicate,
        "client_message_id": client_message_id,
    }


def check_identifier(value: str, name: str) -> str:
    """Validate an id from the URL or query string (400 `invalid_<name>`)."""
    try:
        return _identifier.validate_python(value)
    except ValidationError as exc:
        raise ApiError(
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
        raise ApiError(
            400,
            "invalid_after",
            "after must be a frame id from this conversation (like 1732380000000-0), or 0",
        ) from exc


async def send_error(ws: WebSocket, err: ApiError, client_message_id: Any = None) -> None:
    """An error frame naming the client message it answers; the socket stays open."""
    if not isinstance(client_message_id, str) or len(client_message_id) > 128:
        client_message_id = None
    await ws.send_json(
        {"type": "error", "status": err.status, "client_message_id": client_message_id,
         **err.body()}
    )  # fmt: skip


@router.websocket("/v1/conversations/{conversation_id}/ws")
async def chat_socket(
    ws: WebSocket,
    conversation_id: str,
    intake: IntakeDep,
    guard: GuardDep,
    hub: HubDep,
    settings: SettingsDep,
) -> None:
    """Chat with streamed replies: `?customer_id=&key=&customer_hash=&after=`."""
    await ws.accept()
    address = client_address(ws)
    try:
        conversation_id = check_identifier(conversation_id, "conversation_id")
        customer_id = check_identifier(ws.query_params.get("customer_id", ""), "customer_id")
        after = resume_point(ws.query_params.get("after"))
        caller = guard.widget(
            ws.query_params.get("key"),
            ws.headers.get("origin"),
            customer_id,
            ws.query_params.get("customer_hash"),
        )
        party = Party(caller.tenant, customer_id)
        # Joining claims a new conversation; someone else's is refused like an unknown one.
        await intake.open(conversation_id, party, ip=address)
    except ApiError as err:
        await ws.send_json({"type": "error", "status": err.status, **err.body()})
        await ws.close(code=4000 + err.status if err.status < 500 else 1011)
        return
    session = _Session(ws, conversation_id, party, intake, settings.ws_max_frame_bytes, address)
    budget = ConnectionBudget(settings.connection_frames_per_min)
    hub.add(conversation_id, ws, after=after)
    try:
        if after is not None and not await _resume(ws, hub, conversation_id, after):
            return
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            over = budget.spend()
            if over > settings.connection_frames_per_min:
                REJECTIONS.labels(Channel.WEB.value, "connection_flood").inc()
                await ws.close(code=1008, reason="too many frames")
                break
            if over:
                REJECTIONS.labels(Channel.WEB.value, "rate_limited_connection").inc()
                await send_error(
                    ws, ApiError(429, "rate_limited", "too many frames on this connection")
                )
                continue
            await session.on_frame(message.get("text"), message.get("bytes"))
    except WebSocketDisconnect:
        pass
    finally:
        hub.remove(conversation_id, ws)


async def _resume(ws: WebSocket, hub: ConnectionHub, conversation_id: str, after: FrameId) -> bool:
    """Replay the buffered frames after `after`, then go live; False if the socket is gone.

    The socket joined the hub before the buffer is read, so a frame published meanwhile is
    held, not lost; the hub sends each frame id once (server-side deduplication).
    """
    fanout = provided(ws.app, Fanout)
    frames: list[dict[str, Any]] = []
    complete = fanout is not None
    if fanout is not None:
        try:
            frames = await fanout.replay(conversation_id, after)
        except Exception:
            # Live frames still flow; the client is told the replay may have gaps.
            log.warning("frame buffer unavailable; resuming without replay", exc_info=True)
            complete = False
    try:
        await hub.resume(conversation_id, ws, frames, complete=complete)
    except Exception:
        return False
    return True


class _Session:
    """One customer's socket: turns frames into intake calls and answers."""

    def __init__(
        self,
        ws: WebSocket,
        conversation_id: str,
        party: Party,
        intake: Intake,
        max_frame_bytes: int,
        address: str | None,
    ) -> None:
        self.ws = ws
        self.conversation_id = conversation_id
        self.party = party
        self.intake = intake
        self.max_frame_bytes = max_frame_bytes
        self.address = address

    async def on_frame(self, raw: str | None, data: bytes | None) -> None:
        """Check, parse and act on one frame; every refusal is an error frame."""
        if raw is None:
            size = len(data or b"")
            if size > self.max_frame_bytes:
                await self._refuse(_too_large(self.max_frame_bytes))
            else:
                await self._refuse(ApiError(400, "binary_frame", "send JSON in text frames"))
            return
        # Length first (characters are at most 4 bytes), then nesting, then the parser.
        if len(raw) > self.max_frame_bytes or (
            len(raw) * 4 > self.max_frame_bytes and len(raw.encode()) > self.max_frame_bytes
        ):
            await self._refuse(_too_large(self.max_frame_bytes))
            return
        if json_depth_exceeds(raw):
            await self._refuse(ApiError(400, "too_deep", "the frame is nested too deeply"))
            return
        try:
            frame = json.loads(raw)
        except ValueError:
            await self._refuse(ApiError(400, "malformed_json", "the frame is not valid JSON"))
            return
        if not isinstance(frame, dict):
            await self._refuse(ApiError(422, "invalid_request", "a frame is a JSON object"))
            return
        if frame.get("type") == "rating":
            await self._rating(frame)
        elif frame.get("type") == "end":
            await self._end(frame)
        else:
            await self._message(frame)

    async def _refuse(self, err: ApiError, client_message_id: Any = None) -> None:
        MESSAGES.labels(Channel.WEB.value, "rejected").inc()
        await send_error(self.ws, err, client_message_id)

    async def _message(self, raw: dict[str, Any]) -> None:
        client_message_id = raw.get("client_message_id")
        try:
            try:
                frame = ChatFrame.model_validate(raw)
            except ValidationError as exc:
                raise validation_error(exc.errors(), "frame") from exc
            accepted = await self.intake.message(
                self.conversation_id,
                self.party,
                Channel.WEB,
                frame.text,
                frame.client_message_id,
                ip=self.address,
            )
        except ApiError as err:
            if err.status < 500:
                MESSAGES.labels(Channel.WEB.value, "rejected").inc()
            await send_error(self.ws, err, client_message_id)
            return
        # To every socket of the conversation, with the text as published: another tab, or
        # this page after a reload, replays the customer's side from the buffer.
        await self._to_conversation(
            {
                "type": "accepted",
                "turn_id": accepted.turn_id,
                "event_id": accepted.event_id,
                "client_message_id": frame.client_message_id,
                "duplicate": accepted.duplicate,
                "text": accepted.text,
            }
        )

    async def _rating(self, raw: dict[str, Any]) -> None:
        client_message_id = raw.get("client_message_id")
        try:
            try:
                frame = RatingFrame.model_validate(raw)
            except ValidationError as exc:
                raise validation_error(exc.errors(), "rating") from exc
            rated = await self.intake.rate(
                self.conversation_id,
                self.party,
                Channel.WEB,
                frame.rating,
                frame.comment,
                frame.reply_id,
                frame.client_message_id,
                ip=self.address,
            )
        except ApiError as err:
            if err.status < 500:
                FEEDBACK.labels(Channel.WEB.value, "rejected").inc()
            await send_error(self.ws, err, client_message_id)
            return
        await self.ws.send_json(
            {
                "type": "rating_accepted",
                "event_id": rated.event_id,
                "client_message_id": frame.client_message_id,
                "duplicate": rated.duplicate,
            }
        )

    async def _end(self, raw: dict[str, Any]) -> None:
        client_message_id = raw.get("client_message_id")
        try:
            try:
                frame = EndFrame.model_validate(raw)
            except ValidationError as exc:
                ENDS.labels(Channel.WEB.value, "rejected").inc()
                raise validation_error(exc.errors(), "end") from exc
            # The intake counts its own refusals.
            ended = await self.intake.end(
                self.conversation_id, self.party, Channel.WEB, ip=self.address
            )
        except ApiError as err:
            await send_error(self.ws, err, client_message_id)
            return
        # To every socket of the conversation (buffered): another tab, or this page after a
        # reload, learns the chat is over instead of writing into it.
        await self._to_conversation(
            ended_frame(
                ended.event_id,
                duplicate=ended.duplicate,
                client_message_id=frame.client_message_id,
            )
        )

    async def _to_conversation(self, frame: dict[str, Any]) -> None:
        """Send a frame to every socket of the conversation, buffered and with a frame id.

        Without the buffer (Redis down, or not wired) the frame still reaches this socket.
        """
        fanout = provided(self.ws.app, Fanout)
        if fanout is not None:
            try:
                await fanout.publish(self.conversation_id, frame)
                return
            except Exception:
                log.warning("frame buffer unavailable; answering this socket only", exc_info=True)
        await self.ws.send_json(frame)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "frame_too_large", f"frames are limited to {limit} bytes")
