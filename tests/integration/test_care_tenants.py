"""The care loop keeps tenants apart, on real PostgreSQL (issue #12).

Two tenants each have a customer "user-1" whose bot reply was reviewed highly. Acme's Sam
consented to training, globex's Kim did not. The training export must take Sam's example
only (joining customers by id alone took Kim's words under Sam's consent), and erasing acme's
"user-1" must leave globex's care rows whole. A reviewer of acme never sees or scores
globex's replies.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cbd.training import export
from services.audit.care_settings import CareSettings
from services.audit.outcomes import Outcomes
from services.audit.review_api import REFUSALS, review_router
from services.audit.reviewers import ReviewerAuth
from services.audit.reviews import ReviewDesk, ReviewInput
from shared import db
from shared.events import (
    REVIEW_CRITERIA,
    Channel,
    CustomerErased,
    CustomerErasedEvent,
    ReviewScores,
)
from shared.http import install, provide
from tests.integration.care_support import care_pool, reply, routed

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 5, 9, 0, tzinfo=UTC)
CUSTOMER = "user-1"


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pool = await care_pool(fresh_db)
    yield pool
    await pool.close()


async def queued(pool: db.Pool, tenant: str, name: str, consent: bool) -> tuple[str, uuid.UUID]:
    """Tenant's "user-1", whose bot reply is queued for review; (conversation id, reply id)."""
    conv = f"{tenant}-{uuid.uuid4().hex[:8]}"
    await pool.execute(
        "INSERT INTO memory.customers (tenant, customer_id, name, consent) VALUES ($1, $2, $3, $4)",
        tenant,
        CUSTOMER,
        name,
        {"training": consent},
    )
    outcomes = Outcomes(pool, None, CareSettings(review_sample_share=1.0))
    turn = routed(conv, CUSTOMER, f"{tenant} order: where is my parcel?", T0)
    turn = turn.model_copy(update={"tenant": tenant})
    bot = reply(turn, f"{tenant} reply: it ships today.", at=T0 + timedelta(seconds=1))
    await outcomes.on_turn_routed(turn)
    await outcomes.on_reply_generated(bot)
    return conv, bot.payload.reply_id


async def reviewed(pool: db.Pool, tenant: str, name: str, consent: bool) -> str:
    """Tenant's "user-1", whose bot reply a reviewer scored 5; returns the conversation id."""
    conv, reply_id = await queued(pool, tenant, name, consent)
    await ReviewDesk(pool, None).submit(
        reply_id,
        "rita",
        ReviewInput(scores=ReviewScores(**dict.fromkeys(REVIEW_CRITERIA, 5))),
        tenants=[tenant],
    )
    return conv


async def test_the_same_customer_id_in_two_tenants_is_two_people_in_the_care_loop(
    pool: db.Pool, fresh_db: str, tmp_path: Path
) -> None:
    acme = await reviewed(pool, "acme", "Sam Jones", consent=True)
    globex = await reviewed(pool, "globex", "Kim Lee", consent=False)
    for table in ("conversations", "turns", "replies"):
        rows = await pool.fetch(
            f"SELECT conversation_id, tenant FROM care.{table} ORDER BY tenant"  # noqa: S608
        )
        assert [(r["conversation_id"], r["tenant"]) for r in rows] == [
            (acme, "acme"),
            (globex, "globex"),
        ], table

    stats = await export(fresh_db, tmp_path)
    assert (stats.written, stats.no_consent) == (1, 1)
    raw = (tmp_path / "train.jsonl").read_text()
    [line] = [json.loads(x) for x in raw.splitlines()]
    assert [m["content"] for m in line["messages"][1:]] == [
        "acme order: where is my parcel?",
        "acme reply: it ships today.",
    ]
    assert "globex" not in raw

    # Erasing acme's "user-1" leaves globex's "user-1" and their care rows whole.
    await Outcomes(pool, None, CareSettings()).on_customer_erased(
        CustomerErasedEvent.create(
            conversation_id=acme,
            customer_id=CUSTOMER,
            channel=Channel.WEB,
            tenant="acme",
            payload=CustomerErased(
                erased_customer_id=CUSTOMER,
                conversation_ids=[acme],
                requested_by="test",
                requested_at=T0,
            ),
        )
    )
    for table in ("conversations", "turns", "replies"):
        left = await pool.fetch(f"SELECT tenant FROM care.{table}")  # noqa: S608
        assert [r["tenant"] for r in left] == ["globex"], table
    assert await pool.fetchval("SELECT count(*) FROM care.reviews") == 1


async def test_a_reviewer_never_sees_or_scores_another_tenants_reply(pool: db.Pool) -> None:
    _, acme_reply = await queued(pool, "acme", "Sam Jones", consent=True)
    _, globex_reply = await queued(pool, "globex", "Kim Lee", consent=True)
    secret = uuid.uuid4().hex
    auth = ReviewerAuth({"rita": "pw", "gus": "pw"}, secret, tenants={"rita": "acme"})
    app = FastAPI()
    install(app, max_body_bytes=64 * 1024, refusals=REFUSALS)
    app.include_router(review_router())
    provide(app, auth)
    provide(app, ReviewDesk(pool, None))
    rita = {"Authorization": f"Bearer {auth.issue('rita')}"}
    gus = {"Authorization": f"Bearer {auth.issue('gus')}"}  # not listed: the default tenant
    scores = {"scores": dict.fromkeys(REVIEW_CRITERIA, 4)}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://review") as http:
        queue = (await http.get("/v1/review/queue", headers=rita)).json()["items"]
        assert [i["reply_id"] for i in queue] == [str(acme_reply)]
        assert (await http.get("/v1/review/queue", headers=gus)).json()["items"] == []
        item = (await http.get(f"/v1/review/items/{acme_reply}", headers=rita)).json()
        assert [t["text"] for t in item["transcript"]] == ["acme order: where is my parcel?"]
        unknown = uuid.uuid4()
        for method, body in (("GET", None), ("POST", scores)):
            foreign = await http.request(
                method, f"/v1/review/items/{globex_reply}", json=body, headers=rita
            )
            missing = await http.request(
                method, f"/v1/review/items/{unknown}", json=body, headers=rita
            )
            assert foreign.status_code == missing.status_code == 404, method
            assert foreign.json() == missing.json(), method
        stored = await http.post(f"/v1/review/items/{acme_reply}", json=scores, headers=rita)
        assert stored.status_code == 201
    assert await pool.fetchval("SELECT count(*) FROM care.reviews") == 1
    event = await ReviewDesk(pool, None).submit(
        globex_reply, "gil", ReviewInput.model_validate(scores), tenants=["globex"]
    )
    assert event.tenant == "globex"
