"""The shared HTTP layer: one error shape, the body limit, 503 while starting, ops routes."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from pydantic import BaseModel, ConfigDict
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from shared.http import (
    ApiError,
    Readiness,
    error_responses,
    install,
    ops_router,
    provide,
    requires,
    undocumented_routes,
    withdraw,
)
from shared.metrics import serving_metrics


class Counter:
    """A collaborator the lifespan would create."""

    def __init__(self) -> None:
        self.n = 0


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


CounterDep = Annotated[Counter, Depends(requires(Counter))]


def build() -> FastAPI:
    app = FastAPI()
    install(app, max_body_bytes=100)
    app.include_router(ops_router("demo"))

    @app.post("/items/{item_id}", responses=error_responses(400, 404, 422, 503))
    async def add(item_id: uuid.UUID, body: Body, counter: CounterDep) -> dict[str, int]:
        """Count an item."""
        if body.text == "missing":
            raise ApiError(404, "not_found", "no such item", headers={"x-why": "test"})
        counter.n += 1
        return {"n": counter.n}

    @app.websocket("/ws")
    async def ws(socket: WebSocket, counter: CounterDep) -> None:
        await socket.accept()
        await socket.send_json({"n": counter.n})
        await socket.close()

    return app


@pytest.fixture
def app() -> FastAPI:
    return build()


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def test_routes_answer_503_until_provided_and_after_withdrawn(
    app: FastAPI, http: TestClient
) -> None:
    url = f"/items/{uuid.uuid4()}"
    starting = http.post(url, json={"text": "a"})
    assert (starting.status_code, starting.json()["error"]) == (503, "starting")
    with pytest.raises(WebSocketDisconnect) as closed, http.websocket_connect("/ws") as ws:
        ws.receive_json()
    assert closed.value.code == 1013
    provide(app, Counter())
    assert http.post(url, json={"text": "a"}).json() == {"n": 1}
    with http.websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"n": 1}
    withdraw(app)
    assert http.post(url, json={"text": "a"}).status_code == 503


def test_every_refusal_has_the_same_shape(app: FastAPI, http: TestClient) -> None:
    provide(app, Counter())
    url = f"/items/{uuid.uuid4()}"
    bad_path = http.post("/items/nope", json={"text": "a"})
    assert (bad_path.status_code, bad_path.json()["error"]) == (400, "invalid_item_id")
    bad_body = http.post(url, json={"text": "a", "shoe": 9})
    assert (bad_body.status_code, bad_body.json()["error"]) == (422, "invalid_request")
    assert bad_body.json()["details"] == [
        {"field": "shoe", "problem": "Extra inputs are not permitted"}
    ]
    not_json = http.post(url, content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    missing = http.post(url, json={"text": "missing"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "no such item"}
    assert missing.headers["x-why"] == "test"
    assert http.get("/nowhere").json()["error"] == "not_found"
    assert http.get(url).json()["error"] == "method_not_allowed"


def test_bodies_over_the_limit_are_413_declared_or_streamed(app: FastAPI, http: TestClient) -> None:
    provide(app, Counter())
    url = f"/items/{uuid.uuid4()}"
    declared = http.post(url, content=b'{"text": "' + b"x" * 200 + b'"}')
    assert (declared.status_code, declared.json()["error"]) == (413, "too_large")

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(20):
            yield b"x" * 10
        yield b'"}'

    streamed = http.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert (streamed.status_code, streamed.json()["error"]) == (413, "too_large")
    assert http.post(url, json={"text": "x" * 50}).status_code == 200


def test_readyz_reports_checks_and_starting(app: FastAPI, http: TestClient) -> None:
    assert http.get("/readyz").json() == {"status": "starting"}
    assert http.get("/livez").json() == {"status": "alive", "service": "demo"}

    async def checks() -> dict[str, str]:
        return {"kafka": "ok", "redis": "error: ConnectionError"}

    provide(app, Readiness(checks))
    unready = http.get("/readyz")
    assert unready.status_code == 503
    assert unready.json()["checks"]["redis"] == "error: ConnectionError"
    assert "text/plain" in http.get("/metrics").headers["content-type"]


def test_undocumented_routes_are_named(app: FastAPI) -> None:
    assert undocumented_routes(app) == []

    @app.get("/secret")
    async def secret() -> dict[str, str]:
        return {}

    assert undocumented_routes(app) == ["GET /secret: no description"]


def test_metrics_can_leave_the_main_port() -> None:
    app = FastAPI()
    install(app, max_body_bytes=100)
    app.include_router(ops_router("demo", with_metrics=False))
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/livez").status_code == 200


async def test_metrics_are_served_on_their_own_port_while_the_block_runs() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with serving_metrics("127.0.0.1", port), httpx.AsyncClient() as client:
        scrape = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert scrape.status_code == 200
    assert "cbd_events_consumed_total" in scrape.text
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/metrics")
