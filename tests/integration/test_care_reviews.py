"""Human review over HTTP, on real PostgreSQL and the real broker: a blinded queue, scores on
the seven criteria, review.submitted published, and refusals with clear 4xx answers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from services.audit.care import reviewer_auth
from services.audit.care_settings import CareSettings
from services.audit.outcomes import Outcomes
from services.audit.review_api import REFUSALS, page_router, review_router
from services.audit.reviews import ReviewDesk
from shared import db
from shared import http as shared_http
from shared.events import REVIEW_CRITERIA, Channel, Feedback, FeedbackReceivedEvent
from shared.settings import KafkaSettings
from shared.topics import Topic
from tests.integration.care_support import care_pool, read_topic, real_bus, reply, routed

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
SETTINGS = CareSettings(review_sample_share=0.0)
GOOD = dict.fromkeys(REVIEW_CRITERIA, 4)


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pool = await care_pool(fresh_db)
    yield pool
    await pool.close()


async def queue_a_low_rated_reply(pool: db.Pool, variant: str) -> uuid.UUID:
    """A conversation whose bot reply the customer rated 1: queued for review."""
    outcomes = Outcomes(pool, None, SETTINGS)
    conv = f"conv-{uuid.uuid4().hex[:8]}"
    first = routed(conv, "cust-r", "My parcel is late and I'm worried", T0)
    await outcomes.on_turn_routed(first)
    await outcomes.on_reply_generated(
        reply(first, "Sorry, let me look.", variant=variant, at=T0 + timedelta(seconds=1))
    )
    second = routed(conv, "cust-r", "It's a birthday present", T0 + timedelta(minutes=1))
    await outcomes.on_turn_routed(second)
    bot = reply(
        second, "It will arrive tomorrow.", variant=variant, at=T0 + timedelta(minutes=1, seconds=2)
    )
    await outcomes.on_reply_generated(bot)
    await outcomes.on_feedback_received(
        FeedbackReceivedEvent.create(
            conversation_id=conv,
            customer_id="cust-r",
            channel=Channel.WEB,
            payload=Feedback(rating=1, reply_id=bot.payload.reply_id),
        )
    )
    return bot.payload.reply_id


@pytest.fixture
async def client(pool: db.Pool, isolated_kafka: KafkaSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with real_bus(isolated_kafka) as bus:
        # The audit service's routers and error handling, given what its lifespan provides.
        app = FastAPI()
        shared_http.install(app, max_body_bytes=64 * 1024, refusals=REFUSALS)
        app.include_router(page_router())
        app.include_router(review_router())
        shared_http.provide(app, reviewer_auth(SETTINGS))
        shared_http.provide(app, ReviewDesk(pool, bus))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://review") as http:
            yield http


async def sign_in(http: httpx.AsyncClient, who: str = "reviewer") -> dict[str, str]:
    resp = await http.post("/v1/review/login", json={"reviewer_id": who, "password": who})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def test_a_reviewer_scores_a_blinded_reply_and_the_review_is_stored_and_published(
    pool: db.Pool, client: httpx.AsyncClient, isolated_kafka: KafkaSettings
) -> None:
    reply_id = await queue_a_low_rated_reply(pool, "baseline")
    headers = await sign_in(client)
    queue = (await client.get("/v1/review/queue", headers=headers)).json()
    assert queue["criteria"] == list(REVIEW_CRITERIA)
    [item] = queue["items"]
    assert item["reply_id"] == str(reply_id)
    assert item["reasons"] == ["low_csat"]
    assert item["message"] == "It's a birthday present"
    assert item["reply"] == "It will arrive tomorrow."
    assert item["emotion"]["label"] == "frustration"
    assert item["knowledge_used"] == ["orders/late-or-missing-parcels"]
    # Blinded: nothing in the reviewer's view names the variant or the playbook.
    text = (await client.get(f"/v1/review/items/{reply_id}", headers=headers)).text
    assert "baseline" not in text
    assert "delivery_delay" not in text
    detail = (await client.get(f"/v1/review/items/{reply_id}", headers=headers)).json()
    assert [t["role"] for t in detail["transcript"]] == ["customer", "bot", "customer"]

    body = {
        "scores": {**GOOD, "demonstrates_care": 2},
        "tags": ["invented_fact", "wrong_tone"],
        "better_reply": "I'm sorry it's late. I can't promise tomorrow, but I'll check now.",
    }
    resp = await client.post(f"/v1/review/items/{reply_id}", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    stored = await pool.fetchrow("SELECT * FROM care.reviews WHERE reply_id = $1", reply_id)
    assert stored is not None
    assert stored["reviewer_id"] == "reviewer"
    assert stored["scores"]["demonstrates_care"] == 2
    assert stored["tags"] == ["invented_fact", "wrong_tone"]
    [event] = await read_topic(isolated_kafka, Topic.REVIEW_SUBMITTED, expect=1)
    assert event["event_type"] == "review.submitted"
    assert event["event_id"] == resp.json()["event_id"]
    assert event["payload"]["variant"] == "baseline"  # kept for evaluation, never shown
    assert event["payload"]["scores"]["demonstrates_care"] == 2
    # Reviewed: gone from this reviewer's queue; a second review of it is a 409.
    assert (await client.get("/v1/review/queue", headers=headers)).json()["items"] == []
    again = await client.post(f"/v1/review/items/{reply_id}", json=body, headers=headers)
    assert again.status_code == 409
    assert again.json()["error"] == "already_reviewed"


async def test_refusals_are_clear_4xx_answers(pool: db.Pool, client: httpx.AsyncClient) -> None:
    reply_id = await queue_a_low_rated_reply(pool, "care")
    assert (await client.get("/v1/review/queue")).status_code == 401
    bad_login = await client.post(
        "/v1/review/login", json={"reviewer_id": "reviewer", "password": "nope"}
    )
    assert bad_login.status_code == 401
    not_json = await client.post("/v1/review/login", content=b"{")
    assert (not_json.status_code, not_json.json()["error"]) == (422, "invalid_request")
    headers = await sign_in(client)
    url = f"/v1/review/items/{reply_id}"
    missing = {k: v for k, v in GOOD.items() if k != "satisfaction"}
    resp = await client.post(url, json={"scores": missing}, headers=headers)
    assert (resp.status_code, resp.json()["error"]) == (422, "invalid_request")
    assert resp.json()["details"][0]["field"] == "scores.satisfaction"
    assert (
        await client.post(url, json={"scores": {**GOOD, "satisfaction": 6}}, headers=headers)
    ).status_code == 422
    assert (
        await client.post(url, json={"scores": GOOD, "tags": ["rude"]}, headers=headers)
    ).status_code == 422
    assert (await client.post(url, content=b"not json", headers=headers)).status_code == 422
    too_large = await client.post(url, content=b"x" * 70_000, headers=headers)
    assert (too_large.status_code, too_large.json()["error"]) == (413, "too_large")
    assert (
        await client.get(f"/v1/review/items/{uuid.uuid4()}", headers=headers)
    ).status_code == 404
    assert (await client.get("/v1/review/items/not-a-uuid", headers=headers)).status_code == 404
    limit = await client.get("/v1/review/queue?limit=0", headers=headers)
    assert (limit.status_code, limit.json()["error"]) == (400, "invalid_limit")
    # Nothing was stored by any of these.
    assert await pool.fetchval("SELECT count(*) FROM care.reviews") == 0
    # And the valid review after them is accepted.
    assert (await client.post(url, json={"scores": GOOD}, headers=headers)).status_code == 201
