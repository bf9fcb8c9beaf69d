"""The reviewers' routes before the audit service has started and at the door: 503 while
starting, 401 before anything about a reply is told, the page served, and invalid input
refused in the shared error shape. The desk itself is tested on PostgreSQL
(tests/integration/test_care_reviews.py)."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.audit.care import reviewer_auth
from services.audit.care_settings import CareSettings
from services.audit.review_api import REFUSALS, page_router, review_router
from services.audit.reviews import ReviewDesk, ReviewNotFound
from shared import http


class NoDesk:
    """A desk that knows no reply: enough to see refusals pass through the shared handlers."""

    async def item(self, reply_id: uuid.UUID, *, tenants: object = ()) -> None:
        raise ReviewNotFound(str(reply_id))


def build(*, started: bool) -> FastAPI:
    app = FastAPI()
    http.install(app, max_body_bytes=64 * 1024, refusals=REFUSALS)
    app.include_router(page_router())
    app.include_router(review_router())
    if started:
        http.provide(app, reviewer_auth(CareSettings()))
        http.provide(app, NoDesk(), as_=ReviewDesk)
    return app


@pytest.fixture
def client() -> TestClient:
    return TestClient(build(started=True))


def token(client: TestClient) -> dict[str, str]:
    resp = client.post("/v1/review/login", json={"reviewer_id": "reviewer", "password": "reviewer"})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


def test_routes_answer_503_starting_until_the_lifespan_provides_them() -> None:
    starting = TestClient(build(started=False))
    resp = starting.post("/v1/review/login", json={"reviewer_id": "r", "password": "p"})
    assert (resp.status_code, resp.json()["error"]) == (503, "starting")
    assert starting.get("/v1/review/queue").status_code == 503
    # The page needs nothing from the lifespan.
    assert starting.get("/review").status_code == 200


def test_the_review_page_is_served(client: TestClient) -> None:
    resp = client.get("/review")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "/v1/review/login" in resp.text


def test_sign_in_comes_before_anything_about_a_reply(client: TestClient) -> None:
    for path in ("/v1/review/items/not-a-uuid", f"/v1/review/items/{uuid.uuid4()}"):
        resp = client.get(path, headers={"Authorization": "Bearer forged.token"})
        assert resp.status_code == 401
        assert set(resp.json()) == {"error", "message"}
    wrong = client.post("/v1/review/login", json={"reviewer_id": "reviewer", "password": "x"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "unauthorized")


def test_unknown_replies_are_404_through_the_refusals(client: TestClient) -> None:
    headers = token(client)
    for path in ("/v1/review/items/not-a-uuid", f"/v1/review/items/{uuid.uuid4()}"):
        resp = client.get(path, headers=headers)
        assert resp.status_code == 404
        assert resp.json() == {"error": "not_found", "message": "no such reply in the review queue"}


def test_invalid_input_is_refused_in_the_shared_shape(client: TestClient) -> None:
    headers = token(client)
    url = f"/v1/review/items/{uuid.uuid4()}"
    bad = client.post(url, json={"scores": {"satisfaction": 9}, "rude": 1}, headers=headers)
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_request")
    fields = {d["field"] for d in bad.json()["details"]}
    assert {"scores.satisfaction", "scores.overall_experience", "rude"} <= fields
    for limit in ("0", "101", "many"):
        resp = client.get(f"/v1/review/queue?limit={limit}", headers=headers)
        assert (resp.status_code, resp.json()["error"]) == (400, "invalid_limit")
    huge = client.post(url, content=b"x" * 70_000, headers=headers)
    assert (huge.status_code, huge.json()["error"]) == (413, "too_large")
