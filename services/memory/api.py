"""The customer admin API: profile, identities, memories, issues, export and erasure.

Every route needs the admin bearer token and acts within one tenant (`?tenant=`, the default
tenant when absent): a customer id names a different customer in each tenant. Erasure deletes
what memory holds and, in the same transaction, writes `customer.erased` for every other
service to delete what it holds about the same conversations (`services.memory.erasure`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.memory.customers import CustomerStore, identity_kind
from services.memory.erasure import Eraser
from shared.credentials import bearer_matches
from shared.events import DEFAULT_TENANT, Identifier, utcnow
from shared.http import ApiError, error_responses, requires


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


class Linked(BaseModel):
    """Answer to linking an identity."""

    customer_id: str
    identity: str
    merged_from: str | None
    """The customer that identity belonged to before, now merged into this one."""


class Erased(BaseModel):
    """Answer to erasing a customer."""

    customer_id: str
    erased: bool
    identities: int
    conversations: int
    erasure_event_id: str


class IssueUpdated(BaseModel):
    """Answer to changing an issue's status."""

    issue_id: str
    status: str


Store = Annotated[CustomerStore, Depends(requires(CustomerStore))]
EraserDep = Annotated[Eraser, Depends(requires(Eraser))]
CustomerId = Annotated[Identifier, Path(description="A customer id or any of their identities")]
Tenant = Annotated[Identifier, Query(description="The tenant the customer belongs to")]


def customer_router(admin_token: str) -> APIRouter:
    """The admin routes, behind the admin bearer token."""

    def admin(authorization: Annotated[str, Header()] = "") -> None:
        if not bearer_matches(authorization, admin_token):
            raise ApiError(401, "unauthorized", "an admin bearer token is required")

    router = APIRouter(
        prefix="/v1/customers",
        tags=["customers"],
        dependencies=[Depends(admin)],
        responses=error_responses(400, 401, 503),
    )

    async def resolve(store: CustomerStore, customer_id: str, tenant: str) -> str:
        """Admins may name a customer by any of their identities."""
        if identity_kind(customer_id) == "customer":
            return customer_id
        return await store.resolve(customer_id, tenant=tenant)

    async def profile(store: CustomerStore, customer_id: str, tenant: str) -> dict[str, Any]:
        resolved = await resolve(store, customer_id, tenant)
        data = await store.export(resolved, tenant=tenant)
        if data is None:
            raise ApiError(404, "not_found", "no such customer")
        return {**data["profile"], "identities": [i["identity"] for i in data["identities"]]}

    @router.get("/{customer_id}", responses=error_responses(404))
    async def get_profile(
        customer_id: CustomerId, store: Store, tenant: Tenant = DEFAULT_TENANT
    ) -> dict[str, Any]:
        """The customer's profile and identities."""
        return await profile(store, customer_id, tenant)

    @router.patch("/{customer_id}", responses=error_responses(404, 413, 422))
    async def patch_profile(
        customer_id: CustomerId,
        patch: ProfilePatch,
        store: Store,
        tenant: Tenant = DEFAULT_TENANT,
    ) -> dict[str, Any]:
        """Set profile fields (from a CRM, say); the others stay as they are."""
        await store.update_profile(customer_id, patch.model_dump(exclude_unset=True), tenant=tenant)
        return await profile(store, customer_id, tenant)

    @router.post("/{customer_id}/identities", status_code=201, responses=error_responses(413, 422))
    async def link_identity(
        customer_id: CustomerId,
        link: IdentityLink,
        store: Store,
        tenant: Tenant = DEFAULT_TENANT,
    ) -> Linked:
        """This phone, email or WhatsApp id is this customer; its history merges in."""
        merged = await store.link(customer_id, link.identity, verified=link.verified, tenant=tenant)
        return Linked(customer_id=customer_id, identity=link.identity, merged_from=merged)

    @router.get("/{customer_id}/export", responses=error_responses(404))
    async def export(
        customer_id: CustomerId, store: Store, tenant: Tenant = DEFAULT_TENANT
    ) -> JSONResponse:
        """Everything memory holds about the customer, as a JSON attachment."""
        resolved = await resolve(store, customer_id, tenant)
        data = await store.export(resolved, tenant=tenant)
        if data is None:
            raise ApiError(404, "not_found", "no such customer")
        return JSONResponse(
            {"customer_id": resolved, "exported_at": utcnow().isoformat(), **data},
            headers={"content-disposition": f'attachment; filename="{resolved}.json"'},
        )

    @router.delete("/{customer_id}", responses=error_responses(404))
    async def erase(
        customer_id: CustomerId,
        store: Store,
        eraser: EraserDep,
        x_requested_by: Annotated[str, Header()] = "admin",
        tenant: Tenant = DEFAULT_TENANT,
    ) -> Erased:
        """Erase the customer here and have every service erase what it holds.

        The erasure and its `customer.erased` event commit together (an outbox); a retried
        DELETE answers as the first one did.
        """
        resolved = await resolve(store, customer_id, tenant)
        receipt = await eraser.erase(resolved, x_requested_by[:100], tenant=tenant)
        if receipt is None:
            raise ApiError(404, "not_found", "no such customer")
        return Erased(
            customer_id=receipt.customer_id,
            erased=True,
            identities=receipt.identities,
            conversations=receipt.conversations,
            erasure_event_id=str(receipt.erasure_event_id),
        )

    @router.delete(
        "/{customer_id}/memories/{memory_id}",
        status_code=204,
        response_class=Response,
        responses=error_responses(404),
    )
    async def forget(
        customer_id: CustomerId,
        memory_id: uuid.UUID,
        store: Store,
        tenant: Tenant = DEFAULT_TENANT,
    ) -> None:
        """Forget one thing the customer asked to be forgotten."""
        resolved = await resolve(store, customer_id, tenant)
        if not await store.forget(resolved, memory_id, tenant=tenant):
            raise ApiError(404, "not_found", "no such memory for this customer")

    @router.patch("/{customer_id}/issues/{issue_id}", responses=error_responses(404, 413, 422))
    async def set_issue(
        customer_id: CustomerId,
        issue_id: uuid.UUID,
        body: IssueStatus,
        store: Store,
        tenant: Tenant = DEFAULT_TENANT,
    ) -> IssueUpdated:
        """Open, pend or resolve one of the customer's issues."""
        resolved = await resolve(store, customer_id, tenant)
        if not await store.set_issue_status(resolved, issue_id, body.status, tenant=tenant):
            raise ApiError(404, "not_found", "no such issue for this customer")
        return IssueUpdated(issue_id=str(issue_id), status=body.status)

    return router
