"""The reviewers' HTTP API and the Review page, served by the audit service.

    GET  /review                          the Review page
    POST /v1/review/login                 {"reviewer_id", "password"} -> {"token", "reviewer_id"}
    GET  /v1/review/queue?limit=20        replies waiting for this reviewer (blinded)
    GET  /v1/review/items/{reply_id}      one reply with the conversation up to it
    POST /v1/review/items/{reply_id}      {"scores": {seven criteria 1-5}, "tags", "better_reply",
                                          "comment"} -> 201 {"review_id", "event_id"}

Every error is `{"error": code, "message": ...}` with a 4xx; a second review of the same reply
by the same reviewer is 409.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.audit.reviewers import ReviewerAuth, ReviewerToken
from services.audit.reviews import AlreadyReviewed, ReviewDesk, ReviewInput, ReviewNotFound
from shared.events import REVIEW_CRITERIA

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024

Handler = Callable[[Request, ReviewerToken], Awaitable[Response]]


class Login(BaseModel):
    """Body of POST /v1/review/login."""

    model_config = ConfigDict(extra="forbid")
    reviewer_id: str
    password: str


def error(status: int, code: str, message: str) -> JSONResponse:
    """A 4xx/5xx with a machine code and a sentence."""
    return JSONResponse({"error": code, "message": message}, status_code=status)


class ReviewAPI:
    """Routes for reviewers; the desk is bound once the service has started."""

    def __init__(self, auth: ReviewerAuth) -> None:
        self.auth = auth
        self.desk: ReviewDesk | None = None

    def routes(self) -> list[BaseRoute]:
        """The Review page and the reviewers' API."""
        item = "/v1/review/items/{reply_id}"
        return [
            Route("/review", self.page, methods=["GET"]),
            Route("/v1/review/login", self.login, methods=["POST"]),
            Route("/v1/review/queue", self._authed(self.queue), methods=["GET"]),
            Route(item, self._authed(self.item), methods=["GET"]),
            Route(item, self._authed(self.submit), methods=["POST"]),
        ]

    async def page(self, _: Request) -> Response:
        """The Review page."""
        return FileResponse(STATIC / "review.html", media_type="text/html")

    async def login(self, request: Request) -> Response:
        """Exchange a reviewer id and password for a bearer token."""
        try:
            body = Login.model_validate(json.loads(await _body(request)))
        except (ValueError, ValidationError):
            return error(400, "invalid_request", 'send {"reviewer_id": ..., "password": ...}')
        token = self.auth.login(body.reviewer_id, body.password)
        if token is None:
            return error(401, "unauthorized", "unknown reviewer or wrong password")
        return JSONResponse({"token": token, "reviewer_id": body.reviewer_id})

    def _authed(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            reviewer = self.auth.verify(token) if scheme.lower() == "bearer" else None
            if reviewer is None:
                return error(401, "unauthorized", "sign in: Authorization: Bearer <token>")
            if self.desk is None:
                return error(503, "starting", "the service is starting; try again shortly")
            try:
                return await handler(request, reviewer)
            except ReviewNotFound:
                return error(404, "not_found", "no such reply in the review queue")
            except AlreadyReviewed:
                return error(409, "already_reviewed", "you have reviewed this reply already")

        return endpoint

    def _desk(self) -> ReviewDesk:
        assert self.desk is not None
        return self.desk

    @staticmethod
    def _reply_id(request: Request) -> uuid.UUID:
        try:
            return uuid.UUID(request.path_params["reply_id"])
        except ValueError as exc:
            raise ReviewNotFound(request.path_params["reply_id"]) from exc

    async def queue(self, request: Request, reviewer: ReviewerToken) -> Response:
        """Replies waiting for this reviewer, most important first."""
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            return error(400, "invalid_limit", "limit must be a whole number from 1 to 100")
        if not 1 <= limit <= 100:
            return error(400, "invalid_limit", "limit must be a whole number from 1 to 100")
        items = await self._desk().queue(reviewer.reviewer_id, limit)
        return JSONResponse({"items": items, "criteria": list(REVIEW_CRITERIA)})

    async def item(self, request: Request, _: ReviewerToken) -> Response:
        """One reply with the conversation up to it."""
        return JSONResponse(await self._desk().item(self._reply_id(request)))

    async def submit(self, request: Request, reviewer: ReviewerToken) -> Response:
        """Store a review of the reply and publish it."""
        reply_id = self._reply_id(request)
        try:
            body = ReviewInput.model_validate(json.loads(await _body(request)))
        except ValidationError as exc:
            details = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()[:10]
            ]
            return JSONResponse(
                {
                    "error": "invalid_review",
                    "message": "score each of the seven criteria 1-5; tags from the list",
                    "details": details,
                },
                status_code=422,
            )
        except ValueError:
            return error(400, "invalid_request", "the body must be a JSON object")
        event = await self._desk().submit(reply_id, reviewer.reviewer_id, body)
        return JSONResponse(
            {"review_id": str(event.payload.review_id), "event_id": str(event.event_id)},
            status_code=201,
        )


async def _body(request: Request) -> bytes:
    """The request body, refused past a size no review needs."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ValueError("body too large")
    return body
