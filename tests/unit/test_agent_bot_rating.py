"""The agent's rating of the bot's part: its event, its contract and where it is reported."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cbd.evaluate import AgentBotRatings, compare, to_markdown
from services.escalation.bot_rating import BotRatingBody, bot_rating_event
from services.escalation.desk import Ticket
from shared.events import Channel, Feedback, FeedbackReceivedEvent
from shared.topics import Topic


def ticket() -> Ticket:
    return Ticket(
        ticket_id=uuid.uuid4(),
        conversation_id="sms-abc",
        customer_id="cust-1",
        channel="sms",
        status="claimed",
        priority=1,
        severity="medium",
        reasons=[],
        summary="",
        created_at=datetime(2026, 11, 30, tzinfo=UTC),
        claimed_by="anna",
        claimed_at=None,
        tenant="acme",
    )


def test_the_rating_is_a_feedback_event_from_the_agent_one_id_per_ticket() -> None:
    t = ticket()
    body = BotRatingBody(rating=3, comment=" missed the refund policy ")

    first = bot_rating_event(t, "anna", body)
    second = bot_rating_event(t, "anna", body)

    assert isinstance(first, FeedbackReceivedEvent)
    assert Topic.for_event(first) is Topic.FEEDBACK_RECEIVED
    assert first.event_id == second.event_id  # a retried publish is one rating
    assert first.event_id != bot_rating_event(ticket(), "anna", body).event_id
    assert (first.conversation_id, first.customer_id, first.tenant) == ("sms-abc", "cust-1", "acme")
    assert first.channel is Channel.SMS
    assert first.payload.source == "agent"
    assert first.payload.agent_id == "anna"
    assert first.payload.ticket_id == t.ticket_id
    assert first.payload.comment == "missed the refund policy"


@pytest.mark.parametrize("bad", [{"rating": 0}, {"rating": 6}, {"rating": "4"}, {"rating": 4.5}])
def test_the_body_takes_only_a_whole_1_to_5(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BotRatingBody.model_validate(bad)


def test_feedback_knows_the_agent_as_a_rater_and_nothing_else_new() -> None:
    assert Feedback(rating=2, source="agent", agent_id="anna").source == "agent"
    assert Feedback(rating=2).source == "customer"
    with pytest.raises(ValidationError):
        Feedback.model_validate({"rating": 2, "source": "bot"})


def test_evaluate_reports_agents_ratings_by_variant() -> None:
    report = compare([], pairing="reviewer", source="reviewers")
    report = report.__class__(
        **{
            **report.__dict__,
            "agent_bot_ratings": {
                "care": AgentBotRatings(mean=4.25, n=8),
                "baseline": AgentBotRatings(mean=3.1, n=10),
            },
        }
    )

    text = to_markdown(report)

    assert "## Agents' ratings of the bot before the handoff" in text
    assert "| baseline | 3.10 | 10 |" in text
    assert "| care | 4.25 | 8 |" in text
    assert report.as_json()["agent_bot_ratings"]["care"] == {"mean": 4.25, "n": 8}
