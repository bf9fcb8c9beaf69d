"""POST /v1/conversations/{conversation_id}/end: the customer ends their conversation."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from services.ingest.delivery import Fanout
from services.ingest.intake import ClientMessageId, DirectChannel
from services.ingest.ownership import Party
from services.ingest.routers.deps import (
    ApiCaller,
    ClientAddress,
    ConversationId,
    IntakeDep,
    JsonRoute,
)
from services.ingest.routers.socket import ended_frame
from shared.events import Channel, Identifier
from shared.http import error_responses, provided

log = logging.getLogger(__name__)

router = APIRouter(route_class=JsonRoute, tags=["messages"])


class EndRequest(BaseModel):
    """Body of POST /v1/conversations/{conversation_id}/end."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    channel: DirectChannel = Channel.API
    client_message_id: ClientMessageId | None = None


class EndAccepted(BaseModel):
    """The conversation is over: `conversation.closed` (reason `ended`) is on its way."""

    status: str = "ended"
    conversation_id: str
    event_id: str
    duplicate: bool
    """True when the conversation had been ended before; nothing new was published."""


@router.post(
    "/v1/conversations/{conversation_id}/end",
    status_code=202,
    summary="End a conversation (the customer closes the chat)",
    responses=error_responses(400, 401, 404, 413, 415, 422, 429, 503),
)
async def end_conversation(
    conversation_id: ConversationId,
    incoming: EndRequest,
    caller: ApiCaller,
    intake: IntakeDep,
    address: ClientAddress,
    request: Request,
) -> EndAccepted:
    """Publish `conversation.closed` with reason `ended`; later messages in it get 409.

    Ending twice answers with the first end (`duplicate: true`). A conversation that does not
    exist and one that is another customer's get the same 404. The customer may still rate it.
    """
    ended = await intake.end(
        conversation_id,
        Party(caller.tenant, incoming.customer_id),
        incoming.channel,
        ip=address,
    )
    fanout = provided(request.app, Fanout)
    if fanout is not None:
        try:
            # An open chat window learns the conversation is over.
            await fanout.publish(
                conversation_id,
                ended_frame(
                    ended.event_id,
                    duplicate=ended.duplicate,
                    client_message_id=incoming.client_message_id,
                ),
            )
        except Exception:
            log.warning("could not tell the chat window the conversation ended", exc_info=True)
    return EndAccepted(
        conversation_id=conversation_id, event_id=ended.event_id, duplicate=ended.duplicate
    )
