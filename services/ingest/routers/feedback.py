"""POST /v1/conversations/{conversation_id}/feedback: a rating from any channel."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.ingest.intake import ClientMessageId, Comment, DirectChannel
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

router = APIRouter(route_class=JsonRoute, tags=["feedback"])

Rating = Annotated[int, Field(ge=1, le=5, strict=True)]
"""1-5, a JSON integer: no "4", 4.5 or true sneaking in as a rating."""


class IncomingFeedback(BaseModel):
    """Body of POST /v1/conversations/{conversation_id}/feedback."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    rating: Rating
    comment: Comment = ""
    channel: DirectChannel = Channel.API
    reply_id: uuid.UUID | None = None
    """Set when one reply is rated rather than the whole conversation."""
    client_message_id: ClientMessageId | None = None


class FeedbackAccepted(BaseModel):
    """The rating is on its way as `feedback.received`."""

    status: str = "accepted"
    conversation_id: str
    event_id: str
    client_message_id: str | None
    duplicate: bool


@router.post(
    "/v1/conversations/{conversation_id}/feedback",
    status_code=202,
    summary="Rate a conversation or one reply",
    responses=error_responses(400, 401, 404, 413, 415, 422, 429, 503),
)
async def post_feedback(
    conversation_id: ConversationId,
    incoming: IncomingFeedback,
    caller: ApiCaller,
    intake: IntakeDep,
    address: ClientAddress,
) -> FeedbackAccepted:
    """Publish the customer's rating of their own conversation as `feedback.received`.

    A conversation that does not exist and one that is another customer's get the same 404.
    """
    rated = await intake.rate(
        conversation_id,
        Party(caller.tenant, incoming.customer_id),
        incoming.channel,
        incoming.rating,
        incoming.comment,
        incoming.reply_id,
        incoming.client_message_id,
        ip=address,
    )
    return FeedbackAccepted(
        conversation_id=conversation_id,
        event_id=rated.event_id,
        client_message_id=incoming.client_message_id,
        duplicate=rated.duplicate,
    )
