"""The reviewers' HTTP API and the Review page, served by the audit service.

    GET  /review                          the Review page
    POST /v1/review/login                 {"reviewer_id", "password"} -> {"token", "reviewer_id"}
    GET  /v1/review/queue?limit=20        replies waiting for this reviewer (blinded)
    GET  /v1/review/items/{reply_id}      one reply with the conversation up to it
    POST /v1/review/items/{reply_id}      {"scores": {seven criteria 1-5}, "tags", "better_reply",
                                          "comment"} -> 201 {"review_id", "event_id"}

Two routers: the page and the API. The routes get the reviewer sign-in and the review desk
from the lifespan (`shared.http.requires`), so until the service has started they answer 503.
The reviewer's token is checked before anything about a reply is looked at (401 first). Every
refusal has the shared shape `{"error", "message", "details"?}` (`shared.http`): an invalid
review is 422 `invalid_request` naming each field; an unknown reply is 404 and a second review
of the same reply by the same reviewer is 409 (`REFUSALS`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict

from services.audit.reviewers import ReviewerAuth, ReviewerToken
from services.audit.reviews import AlreadyReviewed, ReviewDesk, ReviewInput, ReviewNotFound
from shared.events import REVIEW_CRITERIA
from shared.http import ApiError, error_responses, html_page, requires

STATIC = Path(__file__).parent / "static"
REVIEW_PAGE = (STATIC / "review.html").read_text()


class Login(BaseModel):
    """Body of POST /v1/review/login."""

    model_config = ConfigDict(extra="forbid")
    reviewer_id: str
    password: str


class Session(BaseModel):
    """A signed-in reviewer's bearer token."""

    token: str
    reviewer_id: str


class ReviewQueue(BaseModel):
    """Replies waiting for the reviewer, most important first, and the criteria to score."""

    items: list[dict[str, Any]]
    criteria: list[str]


class ReviewStored(BaseModel):
    """The stored review and the `review.submitted` event that published it."""

    review_id: str
    event_id: str


Auth = Annotated[ReviewerAuth, Depends(requires(ReviewerAuth))]
Desk = Annotated[ReviewDesk, Depends(requires(ReviewDesk))]

REFUSALS: dict[type[Exception], Callable[[Exception], ApiError]] = {
    ReviewNotFound: lambda _: ApiError(404, "not_found", "no such reply in the review queue"),
    AlreadyReviewed: lambda _: ApiError(
        409, "already_reviewed", "you have reviewed this reply already"
    ),
}
"""How the review desk's refusals read over HTTP."""


def signed_in(auth: Auth, authorization: Annotated[str, Header()] = "") -> ReviewerToken:
    """The reviewer whose bearer token came with the request; 401 without a valid one."""
    scheme, _, token = authorization.partition(" ")
    verified = auth.verify(token) if scheme.lower() == "bearer" else None
    if verified is None:
        raise ApiError(401, "unauthorized", "sign in: Authorization: Bearer <token>")
    return verified


Reviewer = Annotated[ReviewerToken, Depends(signed_in)]


def reply_id_of(
    reply_id: Annotated[str, PathParam(description="The reply's id (a UUID)")],
) -> uuid.UUID:
    """The reply named in the path; an id that is no UUID names no queued reply (404)."""
    try:
        return uuid.UUID(reply_id)
    except ValueError as exc:
        raise ReviewNotFound(reply_id) from exc


ReplyId = Annotated[uuid.UUID, Depends(reply_id_of)]


def page_router() -> APIRouter:
    """The Review page."""
    router = APIRouter(tags=["review"])

    @router.get("/review", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        """The Review page: sign in, the blinded queue, scoring a reply."""
        return html_page(REVIEW_PAGE)

    return router


def review_router() -> APIRouter:
    """Sign-in, the queue, one reply and submitting a review."""
    router = APIRouter(prefix="/v1/review", tags=["review"])
    item_path = "/items/{reply_id}"

    @router.post("/login", responses=error_responses(401, 413, 422, 503))
    async def login(body: Login, auth: Auth) -> Session:
        """Exchange a reviewer id and password for a bearer token."""
        # argon2 is deliberately slow: hash off the event loop.
        token = await asyncio.to_thread(auth.login, body.reviewer_id, body.password)
        if token is None:
            raise ApiError(401, "unauthorized", "unknown reviewer or wrong password")
        return Session(token=token, reviewer_id=body.reviewer_id)

    @router.get("/queue", responses=error_responses(400, 401, 503))
    async def queue(
        reviewer: Reviewer,
        desk: Desk,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> ReviewQueue:
        """Replies waiting for this reviewer, most important first (blinded: no variant)."""
        items = await desk.queue(reviewer.reviewer_id, limit, tenants=reviewer.tenants)
        return ReviewQueue(items=items, criteria=list(REVIEW_CRITERIA))

    @router.get(item_path, responses=error_responses(401, 404, 503))
    async def item(reviewer: Reviewer, reply_id: ReplyId, desk: Desk) -> dict[str, Any]:
        """One of the reviewer's tenants' replies with what produced it and the conversation
        up to it (another tenant's reply is 404, as an unknown one)."""
        return await desk.item(reply_id, tenants=reviewer.tenants)

    @router.post(
        item_path, status_code=201, responses=error_responses(401, 404, 409, 413, 422, 503)
    )
    async def submit(
        reviewer: Reviewer, reply_id: ReplyId, body: ReviewInput, desk: Desk
    ) -> ReviewStored:
        """Score the reply on the seven criteria, store the review and publish it."""
        event = await desk.submit(reply_id, reviewer.reviewer_id, body, tenants=reviewer.tenants)
        return ReviewStored(review_id=str(event.payload.review_id), event_id=str(event.event_id))

    return router
