"""The care loop keeps tenants apart, on real PostgreSQL (issue #12).

Two tenants each have a customer "user-1" whose bot reply was reviewed highly. Acme's Sam
consented to training, globex's Kim did not. The training export must take Sam's example
only (joining customers by id alone took Kim's words under Sam's consent), and erasing acme's
"user-1" must leave globex's care rows whole.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cbd.training import export
from services.audit.care_settings import CareSettings
from services.audit.outcomes import Outcomes
from services.audit.reviews import ReviewDesk, ReviewInput
from shared import db
from shared.events import (
    REVIEW_CRITERIA,
    Channel,
    CustomerErased,
    CustomerErasedEvent,
    ReviewScores,
)
from tests.integration.care_support import care_pool, reply, routed

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 5, 9, 0, tzinfo=UTC)
CUSTOMER = "user-1"


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pool = await care_pool(fresh_db)
    yield pool
    await pool.close()


async def reviewed(pool: db.Pool, tenant: str, name: str, consent: bool) -> str:
    """Tenant's "user-1", whose bot reply a reviewer scored 5; returns the conversation id."""
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
    await ReviewDesk(pool, None).submit(
        bot.payload.reply_id,
        "rita",
        ReviewInput(scores=ReviewScores(**dict.fromkeys(REVIEW_CRITERIA, 5))),
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
