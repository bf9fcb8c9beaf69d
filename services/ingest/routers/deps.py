"""What the routers depend on, as `Annotated[..., Depends(...)]` over what the lifespan provides.

Until the lifespan has provided a collaborator, a route that needs it answers 503 `starting`
(decided once, in `shared.http.requires`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Path
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from services.ingest.channels.identity import Conversations
from services.ingest.channels.survey import MessagingSurvey
from services.ingest.channels.voice import VoiceReplies
from services.ingest.delivery import ConnectionHub
from services.ingest.edge import Caller, EdgeGuard, json_depth_exceeds
from services.ingest.intake import Intake
from services.ingest.settings import IngestSettings
from shared.http import ApiError, requires

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"

SettingsDep = Annotated[IngestSettings, Depends(requires(IngestSettings))]
IntakeDep = Annotated[Intake, Depends(requires(Intake))]
GuardDep = Annotated[EdgeGuard, Depends(requires(EdgeGuard))]
HubDep = Annotated[ConnectionHub, Depends(requires(ConnectionHub))]
ConversationsDep = Annotated[Conversations, Depends(requires(Conversations))]
VoiceDep = Annotated[VoiceReplies, Depends(requires(VoiceReplies))]
SurveyDep = Annotated[MessagingSurvey, Depends(requires(MessagingSurvey))]

ConversationId = Annotated[
    str,
    Path(
        pattern=IDENTIFIER_PATTERN,
        description="1-128 letters, digits and _ . : @ -, starting with a letter or digit",
    ),
]


def client_address(conn: HTTPConnection) -> str | None:
    """The address the connection came from (behind a proxy: what uvicorn's
    `--forwarded-allow-ips` trusts it to be)."""
    return conn.client.host if conn.client else None


ClientAddress = Annotated[str | None, Depends(client_address)]


def presented_key(conn: HTTPConnection) -> str | None:
    """The key a server-to-server caller sent: X-API-Key, or `Authorization: Bearer`."""
    key = conn.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def api_caller(conn: HTTPConnection, guard: GuardDep) -> Caller:
    """The tenant behind a REST request, from its key."""
    return guard.api_key(presented_key(conn))


ApiCaller = Annotated[Caller, Depends(api_caller)]


class JsonRoute(APIRoute):
    """A route whose JSON body is checked before FastAPI parses it.

    415 for anything but `application/json`; 400 `too_deep` for nesting past the limit (found
    in one linear scan, before any parser recurses); 400 `malformed_json` for bytes that are
    not JSON. Then FastAPI validates the body against the route's model as usual.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler with the checks above."""
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                raise ApiError(415, "unsupported_media_type", "send the body as application/json")
            raw = await request.body()
            if json_depth_exceeds(raw):
                raise ApiError(400, "too_deep", "the JSON body is nested too deeply")
            try:
                json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise ApiError(400, "malformed_json", "the body is not valid JSON") from exc
            return await handler(request)

        return checked
