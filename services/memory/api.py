"""The customer admin API: profile, identities, memories, issues, export and erasure.

Every route needs the admin bearer token. Erasure deletes what memory holds, then publishes
`customer.erased` so every other service deletes what it holds about the same conversations.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.memory.customers import CustomerStore, identity_kind
from shared.credentials import bearer_matches
from shared.events import (
    Channel,
    CustomerErased,
    CustomerErasedEvent,
    Identifier,
    utcnow,
)
from shared.kafka import EventBus
from shared.topics import Topic

Handler = Callable[[Request, str], Awaitable[Response]]


class IdentityLink(BaseModel):
    """Body of POST /v1/customers/{id}/identities."""

    model_config = ConfigDict(extra="forbid")
    identity: Identifier
    """A channel identity: `phone:447700900123`, `whatsapp:447700900123`, `email:sam@x.com`..."""
    verified: bool = True


class ProfilePatch(BaseModel):
    """Body of PATCH /v1/customers/{id}: only the fields given change."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    preferred_name: Annotated[str, StringConstraints(max_length=100)] | None = None
    language: Annotated[str, StringConstraints(max_length=40)] | None = None
    tier: Annotated[str, StringConstraints(max_length=40)] | None = None
    lifetime_value: Annotated[float, Field(ge=0)] | None = None
    consent: dict[Annotated[str, StringConstraints(max_length=40)], bool] | None = None


class IssueStatus(BaseModel):
    """Body of PATCH /v1/customers/{id}/issues/{issue_id}."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "pending", "resolved"]


def error(status: int, code: str, message: str) -> JSONResponse:
    """A 4xx with a machine code and a sentence."""
    return JSONResponse({"error": code, "message": message}, status_code=status)


class Rejected(Exception):
    """A request refused with a 4xx; the route wrapper turns it into the response."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.response = error(status, code, message)


M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M], code: str) -> M:
    """The JSON body validated as `model`; a Rejected 4xx says what is wrong."""
    raw = await request.body()
    if len(raw) > 64 * 1024:
        raise Rejected(413, "too_large", "the body is limited to 64 KiB")
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise Rejected(422, code, problems) from exc


def uuid_param(request: Request, name: str) -> uuid.UUID:
    """A UUID from the path, or a Rejected 400."""
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError as exc:
        raise Rejected(400, f"invalid_{name}", f"{name} must be a UUID") from exc


class CustomerAPI:
    """HTTP routes over the customer model; `store` and `bus` are set at start-up."""

    def __init__(self, admin_token: str) -> None:
        self._token = admin_token
        self.store: CustomerStore | None = None
        self.bus: EventBus | None = None

    def routes(self) -> list[BaseRoute]:
        """The admin routes."""
        return [
            Route("/v1/customers/{customer_id}", self._admin(self.get_profile), methods=["GET"]),
            Route(
                "/v1/customers/{customer_id}", self._admin(self.patch_profile), methods=["PATCH"]
            ),
            Route("/v1/customers/{customer_id}", self._admin(self.erase), methods=["DELETE"]),
            Route("/v1/customers/{customer_id}/export", self._admin(self.export), methods=["GET"]),
            Route(
                "/v1/customers/{customer_id}/identities",
                self._admin(self.link_identity),
                methods=["POST"],
            ),
            Route(
                "/v1/customers/{customer_id}/memories/{memory_id}",
                self._admin(self.forget),
                methods=["DELETE"],
            ),
            Route(
                "/v1/customers/{customer_id}/issues/{issue_id}",
                self._admin(self.set_issue),
                methods=["PATCH"],
            ),
        ]

    def _admin(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            if not bearer_matches(request.headers.get("authorization"), self._token):
                return error(401, "unauthorized", "an admin bearer token is required")
            customer_id = request.path_params["customer_id"]
            try:
                IdentityLink(identity=customer_id)
            except ValidationError:
                return error(400, "invalid_customer_id", "customer_id has characters not allowed")
            if self.store is None:
                return error(503, "starting", "the memory service is still starting")
            try:
                return await handler(request, customer_id)
            except Rejected as rejected:
                return rejected.response

        return guarded

    @property
    def _store(self) -> CustomerStore:
        assert self.store is not None
        return self.store

    async def _resolve(self, customer_id: str) -> str:
        """Admins may name a customer by any of their identities."""
        if identity_kind(customer_id) == "customer":
            return customer_id
        return await self._store.resolve(customer_id)

    async def get_profile(self, _: Request, customer_id: str) -> Response:
        """GET /v1/customers/{id}: the profile."""
        data = await self._store.export(await self._resolve(customer_id))
        if data is None:
            return error(404, "not_found", "no such customer")
        return JSONResponse(
            {**data["profile"], "identities": [i["identity"] for i in data["identities"]]}
        )

    async def patch_profile(self, request: Request, customer_id: str) -> Response:
        """PATCH /v1/customers/{id}: set profile fields (from a CRM, say)."""
        patch = await parse_body(request, ProfilePatch, "invalid_profile")
        await self._store.update_profile(customer_id, patch.model_dump(exclude_unset=True))
        return await self.get_profile(request, customer_id)

    async def link_identity(self, request: Request, customer_id: str) -> Response:
        """POST /v1/customers/{id}/identities: this phone/email/WhatsApp id is this customer."""
        link = await parse_body(request, IdentityLink, "invalid_identity")
        merged = await self._store.link(customer_id, link.identity, verified=link.verified)
        return JSONResponse(
            {"customer_id": customer_id, "identity": link.identity, "merged_from": merged},
            status_code=201,
        )

    async def export(self, _: Request, customer_id: str) -> Response:
        """GET /v1/customers/{id}/export: everything memory holds about the customer."""
        resolved = await self._resolve(customer_id)
        data = await self._store.export(resolved)
        if data is None:
            return error(404, "not_found", "no such customer")
        return JSONResponse(
            {"customer_id": resolved, "exported_at": utcnow().isoformat(), **data},
            headers={"content-disposition": f'attachment; filename="{resolved}.json"'},
        )

    async def erase(self, request: Request, customer_id: str) -> Response:
        """DELETE /v1/customers/{id}: erase the customer here, then tell every service."""
        resolved = await self._resolve(customer_id)
        erased = await self._store.erase(resolved)
        if erased is None:
            return error(404, "not_found", "no such customer")
        identities, conversations = erased
        assert self.bus is not None
        requested_by = request.headers.get("x-requested-by", "admin")[:100]
        event = CustomerErasedEvent.create(
            # The erasure is keyed by a random id: the customer's own id is what must go.
            conversation_id=f"erasure-{uuid.uuid4().hex}",
            customer_id=resolved,
            channel=Channel.API,
            payload=CustomerErased(
                erased_customer_id=resolved,
                identities=identities,
                conversation_ids=conversations,
                requested_by=requested_by,
                requested_at=utcnow(),
            ),
        )
        await self.bus.publish(Topic.CUSTOMER_ERASED, event)
        return JSONResponse(
            {
                "customer_id": resolved,
                "erased": True,
                "identities": len(identities),
                "conversations": len(conversations),
                "erasure_event_id": str(event.event_id),
            }
        )

    async def forget(self, request: Request, customer_id: str) -> Response:
        """DELETE /v1/customers/{id}/memories/{memory_id}: forget one thing."""
        memory_id = uuid_param(request, "memory_id")
        if not await self._store.forget(await self._resolve(customer_id), memory_id):
            return error(404, "not_found", "no such memory for this customer")
        return Response(status_code=204)

    async def set_issue(self, request: Request, customer_id: str) -> Response:
        """PATCH /v1/customers/{id}/issues/{issue_id}: open, pend or resolve an issue."""
        issue_id = uuid_param(request, "issue_id")
        status = (await parse_body(request, IssueStatus, "invalid_status")).status
        if not await self._store.set_issue_status(
            await self._resolve(customer_id), issue_id, status
        ):
            return error(404, "not_found", "no such issue for this customer")
        return JSONResponse({"issue_id": str(issue_id), "status": status})
