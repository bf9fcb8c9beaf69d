"""Outcomes on real PostgreSQL and the real broker: containment, FCR, repeat contacts, idle
closes, CSAT by variant and what gets queued for review."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from services.audit.care_settings import CareSettings
from services.audit.outcomes import Outcomes
from shared import db
from shared.events import (
    Channel,
    CloseReason,
    ConversationClosed,
    ConversationClosedEvent,
    CustomerErased,
    CustomerErasedEvent,
    Feedback,
    FeedbackReceivedEvent,
)
from shared.settings import KafkaSettings
from shared.topics import Topic
from tests.integration.care_support import care_pool, issue, read_topic, real_bus, reply, routed

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
SETTINGS = CareSettings(
    fcr_window_days=7, review_sample_share=0.0, idle_timeout_s={"web": 1800, "sms": 86400}
)


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pool = await care_pool(fresh_db)
    yield pool
    await pool.close()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def closed(
    conv: str,
    customer: str,
    at: datetime,
    reason: CloseReason = CloseReason.ENDED,
    disposition: str | None = None,
    agent: str | None = None,
) -> ConversationClosedEvent:
    event = ConversationClosedEvent.create(
        conversation_id=conv,
        customer_id=customer,
        channel=Channel.WEB,
        payload=ConversationClosed(reason=reason, disposition=disposition, agent_id=agent),
    )
    return event.model_copy(update={"occurred_at": at})


def ids() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"conv-{tag}", f"cust-{tag}"


async def row(pool: db.Pool, conv: str) -> dict[str, object]:
    found = await pool.fetchrow("SELECT * FROM care.conversations WHERE conversation_id = $1", conv)
    assert found is not None
    return dict(found)


async def test_a_contained_resolved_conversation_becomes_fcr_once_the_window_passes(
    pool: db.Pool,
) -> None:
    outcomes = Outcomes(pool, None, SETTINGS)
    conv, cust = ids()
    playbook = f"pb-{conv}"  # a label of its own, so other tests' counts do not mix in
    turn = routed(conv, cust, "Where is my parcel?", T0, issues=[issue("delivery_lost", conv, T0)])
    await outcomes.on_turn_routed(turn)
    await outcomes.on_reply_generated(
        reply(
            turn,
            "Let me check.",
            variant="baseline",
            playbook=playbook,
            at=T0 + timedelta(seconds=2),
        )
    )
    labels = {"variant": "baseline", "channel": "web", "playbook": playbook, "agent": "none"}
    before = sample("cbd_conversations_closed_total", **labels, reason="ended", contained="true")
    event = closed(conv, cust, T0 + timedelta(minutes=5))
    await outcomes.on_conversation_closed(event)
    await outcomes.on_conversation_closed(event)  # redelivered: counted once
    assert (
        sample("cbd_conversations_closed_total", **labels, reason="ended", contained="true")
        == before + 1
    )
    assert sample("cbd_conversation_resolutions_total", **labels) == 1
    # Six days on, still inside the window: not settled yet.
    assert await outcomes.settle_fcr(T0 + timedelta(days=6)) == 0
    assert (await row(pool, conv))["fcr"] is None
    assert await outcomes.settle_fcr(T0 + timedelta(days=8)) >= 1
    assert (await row(pool, conv))["fcr"] is True
    assert sample("cbd_first_contact_resolutions_total", **labels) == 1
    assert await outcomes.settle_fcr(T0 + timedelta(days=9)) == 0  # settled once


async def test_a_repeat_contact_on_the_same_issue_turns_fcr_off(pool: db.Pool) -> None:
    outcomes = Outcomes(pool, None, SETTINGS)
    first, cust = ids()
    playbook = f"pb-{first}"
    lost = issue("delivery_lost", first, T0)
    turn = routed(first, cust, "My parcel is lost", T0, issues=[lost])
    await outcomes.on_turn_routed(turn)
    await outcomes.on_reply_generated(
        reply(turn, "Sorry!", playbook=playbook, at=T0 + timedelta(seconds=1))
    )
    await outcomes.on_conversation_closed(closed(first, cust, T0 + timedelta(minutes=3)))
    # Another conversation that day, about something else: no repeat.
    other = f"{first}-other"
    t_other = T0 + timedelta(hours=2)
    await outcomes.on_turn_routed(
        routed(
            other,
            cust,
            "Can I change my address?",
            t_other,
            issues=[lost, issue("account", other, t_other)],
        )
    )
    assert (await row(pool, first))["repeated_by"] is None
    # Three days later the customer is back about the lost parcel (memory updated the issue).
    second = f"{first}-again"
    t2 = T0 + timedelta(days=3)
    back = lost.model_copy(update={"updated_at": t2})
    await outcomes.on_turn_routed(routed(second, cust, "Still no parcel!", t2, issues=[back]))
    earlier = await row(pool, first)
    assert earlier["fcr"] is False
    assert earlier["repeated_by"] == second
    assert (await row(pool, second))["repeat_of"] == first
    labels = {"variant": "care", "channel": "web", "playbook": playbook, "agent": "none"}
    assert sample("cbd_repeat_contacts_total", **labels) == 1
    # The window passing does not make it FCR again.
    await outcomes.settle_fcr(T0 + timedelta(days=30))
    assert (await row(pool, first))["fcr"] is False
    assert sample("cbd_first_contact_resolutions_total", **labels) == 0


async def test_an_escalated_conversation_is_not_contained_and_an_unresolved_one_is_no_fcr(
    pool: db.Pool,
) -> None:
    outcomes = Outcomes(pool, None, SETTINGS)
    conv, cust = ids()
    playbook = f"pb-{conv}"
    turn = routed(conv, cust, "My card was stolen", T0)
    await outcomes.on_turn_routed(turn)
    bot = reply(turn, "I'm so sorry.", playbook=playbook, at=T0 + timedelta(seconds=1))
    await outcomes.on_reply_generated(bot)
    await outcomes.on_turn_routed(
        routed(conv, cust, "a person please", T0 + timedelta(minutes=1), human=True)
    )
    # The bot's replies of an escalated conversation are queued for review.
    reasons = await pool.fetchval(
        "SELECT reasons FROM care.review_items WHERE reply_id = $1", bot.payload.reply_id
    )
    assert reasons == ["escalated"]
    await outcomes.on_conversation_closed(
        closed(
            conv,
            cust,
            T0 + timedelta(minutes=20),
            CloseReason.AGENT_RESOLVED,
            disposition="unresolved",
            agent="dana",
        )
    )
    state = await row(pool, conv)
    assert state["escalated"] is True
    assert state["agent_id"] == "dana"
    assert state["disposition"] == "unresolved"
    assert state["fcr_candidate"] is False
    labels = {"variant": "care", "channel": "web", "playbook": playbook, "agent": "dana"}
    assert (
        sample(
            "cbd_conversations_closed_total", **labels, reason="agent_resolved", contained="false"
        )
        == 1
    )
    assert sample("cbd_conversation_resolutions_total", **labels) == 0


async def test_a_rated_baseline_reply_moves_the_baseline_series_and_a_low_one_is_queued(
    pool: db.Pool,
) -> None:
    outcomes = Outcomes(pool, None, SETTINGS)
    conv, cust = ids()
    playbook = f"pb-{conv}"
    turn = routed(conv, cust, "Hello?", T0)
    await outcomes.on_turn_routed(turn)
    bot = reply(turn, "Hi.", variant="baseline", playbook=playbook, at=T0 + timedelta(seconds=1))
    await outcomes.on_reply_generated(bot)
    base = {"variant": "baseline", "channel": "web", "playbook": playbook, "agent": "none"}
    care = {**base, "variant": "care"}
    rating = FeedbackReceivedEvent.create(
        conversation_id=conv,
        customer_id=cust,
        channel=Channel.WEB,
        payload=Feedback(rating=1, reply_id=bot.payload.reply_id, nps=3, comment="useless"),
    )
    await outcomes.on_feedback_received(rating)
    await outcomes.on_feedback_received(rating)  # redelivered
    assert sample("cbd_care_csat_ratings_total", rating="1", **base) == 1
    assert sample("cbd_care_csat_ratings_total", rating="1", **care) == 0
    assert sample("cbd_care_nps_ratings_total", score="3", **base) == 1
    item = await pool.fetchrow(
        "SELECT * FROM care.review_items WHERE reply_id = $1", bot.payload.reply_id
    )
    assert item is not None
    assert item["reasons"] == ["low_csat"]
    # A conversation-level rating (no reply id) is queued as the last bot reply.
    flagged = reply(
        turn,
        "Refund coming!",
        variant="baseline",
        playbook=playbook,
        flags=["commitment_held"],
        at=T0 + timedelta(seconds=5),
    )
    await outcomes.on_reply_generated(flagged)
    await outcomes.on_feedback_received(
        FeedbackReceivedEvent.create(
            conversation_id=conv, customer_id=cust, channel=Channel.WEB, payload=Feedback(rating=2)
        )
    )
    reasons = await pool.fetchval(
        "SELECT reasons FROM care.review_items WHERE reply_id = $1", flagged.payload.reply_id
    )
    assert reasons == ["flagged", "low_csat"]


async def test_idle_conversations_close_by_channel_once_across_two_replicas(
    pool: db.Pool, isolated_kafka: KafkaSettings
) -> None:
    web, cust = ids()
    sms = f"{web}-sms"
    async with real_bus(isolated_kafka) as bus:
        replicas = [Outcomes(pool, bus, SETTINGS), Outcomes(pool, bus, SETTINGS)]
        await replicas[0].on_turn_routed(routed(web, cust, "hi", T0))
        await replicas[0].on_turn_routed(routed(sms, cust, "hi", T0, channel=Channel.SMS))
        # 20 minutes on: nothing is idle yet.
        assert await replicas[0].close_idle(T0 + timedelta(minutes=20)) == 0
        # An hour on: the web chat is idle (30 min), the SMS conversation is not (24 h).
        later = T0 + timedelta(hours=1)
        counts = [await replicas[0].close_idle(later), await replicas[1].close_idle(later)]
        assert sorted(counts) == [0, 1]
        records = await read_topic(isolated_kafka, Topic.CONVERSATION_CLOSED, expect=1)
        assert [r["conversation_id"] for r in records] == [web]
        event = ConversationClosedEvent.model_validate(records[0])
        assert event.payload.reason is CloseReason.IDLE
        await replicas[1].on_conversation_closed(event)
        assert (await row(pool, web))["close_reason"] == "idle"
        assert (await row(pool, sms))["closed_at"] is None
        assert await replicas[0].close_idle(T0 + timedelta(days=2)) == 1  # now the SMS one


async def test_erasure_removes_the_customer_from_every_care_table(pool: db.Pool) -> None:
    outcomes = Outcomes(pool, None, SETTINGS)
    conv, cust = ids()
    turn = routed(conv, cust, "my email is a@b.example", T0)
    await outcomes.on_turn_routed(turn)
    await outcomes.on_reply_generated(
        reply(turn, "Thanks", flags=["x"], at=T0 + timedelta(seconds=1))
    )
    await outcomes.on_customer_erased(
        CustomerErasedEvent.create(
            conversation_id=conv,
            customer_id=cust,
            channel=Channel.WEB,
            payload=CustomerErased(
                erased_customer_id=cust,
                conversation_ids=[conv],
                requested_by="test",
                requested_at=T0,
            ),
        )
    )
    for table in ("conversations", "turns", "replies", "review_items"):
        left = await pool.fetchval(f"SELECT count(*) FROM care.{table}")  # noqa: S608
        assert left == 0, table


async def test_writing_again_after_the_close_is_a_repeat_only_about_the_same_issue(
    pool: db.Pool,
) -> None:
    outcomes = Outcomes(pool, None, SETTINGS)
    thanks, cust = ids()
    lost = issue("delivery_lost", thanks, T0)
    await outcomes.on_turn_routed(routed(thanks, cust, "My parcel is lost", T0, issues=[lost]))
    await outcomes.on_conversation_closed(closed(thanks, cust, T0 + timedelta(minutes=5)))
    # "Thanks!" an hour later: memory updates no issue, so nothing repeats.
    await outcomes.on_turn_routed(
        routed(thanks, cust, "Thanks!", T0 + timedelta(hours=1), issues=[lost])
    )
    state = await row(pool, thanks)
    assert state["closed_at"] is None  # reopened
    assert state["repeated_by"] is None
    assert state["fcr"] is None
    # Back about the lost parcel in a conversation that closed again: not FCR.
    again, cust2 = ids()
    lost2 = issue("delivery_lost", again, T0)
    await outcomes.on_turn_routed(routed(again, cust2, "My parcel is lost", T0, issues=[lost2]))
    await outcomes.on_conversation_closed(closed(again, cust2, T0 + timedelta(minutes=5)))
    t2 = T0 + timedelta(days=1)
    await outcomes.on_turn_routed(
        routed(
            again,
            cust2,
            "Still no parcel",
            t2,
            issues=[lost2.model_copy(update={"updated_at": t2})],
        )
    )
    state = await row(pool, again)
    assert state["fcr"] is False
    assert state["repeated_by"] == again
    assert state["issue_categories"] == ["delivery_lost"]
