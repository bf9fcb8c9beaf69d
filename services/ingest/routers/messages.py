"""POST /v1/conversations/{conversation_id}/messages: a customer message from a server."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from services.ingest.intake import ClientMessageId, CustomerText, DirectChannel
from services.ingest.ownership import Party
from services.ingest.routers.deps import (
    ApiCaller,
    ClientAddress,
    ConversationId,
    IntakeDep,
    JsonRoute,
)
from shared.events import Channel, Identifier
from shared.http import error_responses

router = APIRouter(route_class=JsonRoute, tags=["messages"])


class IncomingMessage(BaseModel):
    """Body of POST /v1/conversations/{conversation_id}/messages."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    text: CustomerText
    channel: DirectChannel = Channel.API
    """api, web or email; SMS, WhatsApp and voice come only through their signed webhooks."""
    client_message_id: ClientMessageId | None = None


class MessageAccepted(BaseModel):
    """The edge took the message: it is on its way as `turn.received`."""

    status: str = "accepted"
    conversation_id: str
    turn_id: str
    event_id: str
    trace_id: str
    client_message_id: str | None
    duplicate: bool
    """True when this client_message_id was accepted before; nothing new was published."""
    stream: str
    """The WebSocket that streams the reply."""


@router.post(
    "/v1/conversations/{conversation_id}/messages",
    status_code=202,
    summary="Send a customer message",
    responses=error_responses(400, 401, 404, 413, 415, 422, 429, 503),
)
async def post_message(
    conversation_id: ConversationId,
    incoming: IncomingMessage,
    caller: ApiCaller,
    intake: IntakeDep,
    address: ClientAddress,
) -> MessageAccepted:
    """Publish the message as `turn.received`; the reply streams on the conversation's socket.

    The first message makes the conversation the customer's; anyone else gets 404.
    Card numbers and other sensitive numbers are replaced by tokens before anything is kept.
    """
    accepted = await intake.message(
        conversation_id,
        Party(caller.tenant, incoming.customer_id),
        incoming.channel,
        incoming.text,
        incoming.client_message_id,
        ip=address,
    )
    return MessageAccepted(
        conversation_id=conversation_id,
        turn_id=accepted.turn_id,
        event_id=accepted.event_id,
        trace_id=accepted.trace_id,
        client_message_id=incoming.client_message_id,
        duplicate=accepted.duplicate,
        stream=f"/v1/conversations/{conversation_id}/ws",
    )
