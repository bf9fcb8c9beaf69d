"""The customer admin API's refusals, in front of a store that records what reached it."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI
from starlette.testclient import TestClient

from services.memory.api import customer_router
from services.memory.customers import CustomerStore
from shared.events import DEFAULT_TENANT
from shared.http import install, provide, undocumented_routes

TOKEN = "admin-token"


class RecordingStore:
    """Stands in for CustomerStore: the refusals must happen before any call reaches it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def update_profile(
        self, customer_id: str, fields: dict[str, Any], *, tenant: str = DEFAULT_TENANT
    ) -> None:
        self.calls.append(("update_profile", fields))

    async def export(
        self, customer_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> dict[str, Any] | None:
        self.calls.append(("export", customer_id))
        return None

    async def set_issue_status(
        self,
        customer_id: str,
        issue_id: uuid.UUID,
        status: str,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> bool:
        self.calls.append(("set_issue_status", status))
        return False


def app(store: RecordingStore | None) -> FastAPI:
    built = FastAPI()
    install(built, max_body_bytes=64 * 1024)
    built.include_router(customer_router(TOKEN))
    if store is not None:
        provide(built, store, as_=CustomerStore)
    return built


def client(store: RecordingStore | None) -> TestClient:
    return TestClient(app(store))


def test_refusals_reach_nothing() -> None:
    store = RecordingStore()
    http = client(store)
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert http.get("/v1/customers/sam/export").status_code == 401
    wrong = http.get("/v1/customers/sam/export", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert http.get("/v1/customers/s%20am/export", headers=auth).status_code == 400
    bad = http.patch("/v1/customers/sam", headers=auth, json={"tier": "gold", "shoe": 9})
    assert bad.status_code == 422
    assert "shoe" in bad.json()["message"]
    huge = http.patch("/v1/customers/sam", headers=auth, content=b"{" + b" " * 70_000 + b"}")
    assert huge.status_code == 413
    issue = http.patch("/v1/customers/sam/issues/not-a-uuid", headers=auth, json={})
    assert (issue.status_code, issue.json()["error"]) == (400, "invalid_issue_id")
    status = http.patch(
        f"/v1/customers/sam/issues/{uuid.uuid4()}", headers=auth, json={"status": "done"}
    )
    assert status.status_code == 422
    assert store.calls == []
    assert http.get("/v1/customers/sam/export", headers=auth).status_code == 404
    assert store.calls == [("export", "sam")]


def test_not_ready_is_503() -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert client(None).get("/v1/customers/sam/export", headers=auth).status_code == 503


def test_every_route_is_documented() -> None:
    assert undocumented_routes(app(None)) == []
