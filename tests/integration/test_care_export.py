"""`cbd export training` on real PostgreSQL: consent only, erased customers never, PII masked."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cbd import learning
from cbd.evaluate import compare, load_reviews, queue_scenarios
from cbd.scenarios import ScenarioReply
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
    Feedback,
    FeedbackReceivedEvent,
    ReviewScores,
)
from tests.integration.care_support import care_pool, reply, routed

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pool = await care_pool(fresh_db)
    yield pool
    await pool.close()


async def reviewed(
    pool: db.Pool,
    *,
    consent: bool | None,
    score: int,
    better: str = "",
    text: str = "I'm Sam Jones, call me on +44 7700 900123 about order 48213977",
) -> str:
    """A customer whose bot reply was reviewed; returns the customer id."""
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    conv = f"conv-{customer}"
    await pool.execute(
        "INSERT INTO memory.customers (customer_id, name, consent) VALUES ($1, 'Sam Jones', $2)",
        customer,
        {} if consent is None else {"training": consent},
    )
    outcomes = Outcomes(pool, None, CareSettings(review_sample_share=0.0))
    turn = routed(conv, customer, text, T0)
    await outcomes.on_turn_routed(turn)
    bot = reply(turn, "Thanks Sam Jones, I'll call +44 7700 900123.", at=T0 + timedelta(seconds=1))
    await outcomes.on_reply_generated(bot)
    await outcomes.on_feedback_received(
        FeedbackReceivedEvent.create(
            conversation_id=conv,
            customer_id=customer,
            channel=Channel.WEB,
            payload=Feedback(rating=1, reply_id=bot.payload.reply_id),
        )
    )
    await ReviewDesk(pool, None).submit(
        bot.payload.reply_id,
        "rita",
        ReviewInput(
            scores=ReviewScores(**dict.fromkeys(REVIEW_CRITERIA, score)), better_reply=better
        ),
    )
    return customer


async def test_only_consenting_living_customers_highly_rated_or_corrected_and_masked(
    pool: db.Pool, fresh_db: str, tmp_path: Path
) -> None:
    good = await reviewed(pool, consent=True, score=5)
    corrected = await reviewed(
        pool,
        consent=True,
        score=2,
        better="I'm sorry, Sam Jones. I'll look into order 48213977 now.",
    )
    await reviewed(pool, consent=True, score=2)  # low and not corrected: nothing to learn
    refused = await reviewed(pool, consent=False, score=5)
    unknown = await reviewed(pool, consent=None, score=5)  # never asked: no consent
    erased = await reviewed(pool, consent=True, score=5)
    # Erasure: memory deletes the customer and the care loop its rows.
    await pool.execute("DELETE FROM memory.customers WHERE customer_id = $1", erased)
    await Outcomes(pool, None, CareSettings()).on_customer_erased(
        CustomerErasedEvent.create(
            conversation_id=f"conv-{erased}",
            customer_id=erased,
            channel=Channel.WEB,
            payload=CustomerErased(
                erased_customer_id=erased,
                conversation_ids=[f"conv-{erased}"],
                requested_by="test",
                requested_at=T0,
            ),
        )
    )

    stats = await export(fresh_db, tmp_path)
    assert (stats.written, stats.corrected, stats.rated_highly, stats.no_consent) == (2, 1, 1, 2)
    lines = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    raw = (tmp_path / "train.jsonl").read_text()
    for secret in (refused, unknown, erased, good, corrected, "Sam", "Jones", "7700", "48213977"):
        assert secret not in raw, secret
    for line in lines:
        roles = [m["role"] for m in line["messages"]]
        assert roles == ["system", "user", "assistant"]
    answers = {line["metadata"]["source"]: line["messages"][-1]["content"] for line in lines}
    assert answers["corrected"] == "I'm sorry, [NAME]. I'll look into order [NUMBER] now."
    assert "[PHONE]" in answers["rated_highly"]
    sheet = (tmp_path / "DATASHEET.md").read_text()
    assert "2 chat examples" in sheet
    assert "consent.training: true" in sheet


async def test_the_learning_report_reads_the_period_from_postgres(
    pool: db.Pool, fresh_db: str
) -> None:
    await reviewed(pool, consent=True, score=2, better="So sorry about the wait; it ships today.")
    await reviewed(pool, consent=True, score=2, better="So sorry about the wait, it ships today!")
    await reviewed(pool, consent=True, score=5)
    outcomes = await learning.load(fresh_db, T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert len(outcomes) == 3
    # Two low reviews; and every one of these customers rated the reply 1, so all three are low.
    assert sum(bool(o.review_means) and min(o.review_means) <= 2 for o in outcomes) == 2
    assert all(o.low for o in outcomes)
    report = learning.build(outcomes, T0 - timedelta(days=1), T0 + timedelta(days=1))
    [playbook] = report.playbooks
    assert (playbook["name"], playbook["replies"], playbook["low"]) == ("delivery_delay", 3, 3)
    assert report.repeated_corrections[0]["count"] == 2
    # Outside the period: nothing.
    assert await learning.load(fresh_db, T0 + timedelta(days=2), T0 + timedelta(days=3)) == []


async def test_scenario_replies_queued_for_review_are_paired_by_scenario(
    pool: db.Pool, fresh_db: str
) -> None:
    replies = [
        ScenarioReply(pair, variant, f"message {pair}", "anxiety", f"{variant} reply", None, [])
        for pair in ("s_one", "s_two")
        for variant in ("baseline", "care")
    ]
    assert await queue_scenarios(fresh_db, replies) == 4
    desk = ReviewDesk(pool, None)
    queue = await desk.queue("rita", limit=10)
    assert [item["reasons"] for item in queue] == [["scenario"]] * 4
    assert all("baseline" not in item["conversation_id"] for item in queue)  # blinded
    for item in queue:
        score = 4 if item["reply"].startswith("care") else 2
        await desk.submit(
            uuid.UUID(item["reply_id"]),
            "rita",
            ReviewInput(scores=ReviewScores(**dict.fromkeys(REVIEW_CRITERIA, score))),
        )
    ratings = await load_reviews(fresh_db, scenarios=True)
    assert sorted((r.pair_key, r.variant) for r in ratings) == [
        ("s_one", "baseline"),
        ("s_one", "care"),
        ("s_two", "baseline"),
        ("s_two", "care"),
    ]
    assert await load_reviews(fresh_db) == []  # live reviews only by default
    row = compare(ratings, resamples=200, pairing="scenario").rows[0]
    assert (row.difference, row.n_pairs) == (2.0, 2)
