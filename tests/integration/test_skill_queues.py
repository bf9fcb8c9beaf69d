"""Skill queues on real PostgreSQL: a turn's intent names the ticket's queue and urgency."""

from __future__ import annotations

import pytest

from services.escalation.desk import AgentSkills, Desk
from shared.embedding import MiniLmEmbedder
from shared.events import RouteTarget
from shared.intent import IntentReader
from tests.integration.test_desk import decision, turn_event

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reader() -> IntentReader:
    return IntentReader(MiniLmEmbedder())


async def open_ticket(desk: Desk, reader: IntentReader, text: str) -> None:
    event = turn_event(f"conv-{abs(hash(text))}", text)
    event = event.model_copy(
        update={
            "payload": event.payload.model_copy(update={"intent": reader.read(text).contract()})
        }
    )
    await desk.route(event, lambda _: decision(RouteTarget.HUMAN))


async def test_tickets_go_to_the_queue_of_their_skill(
    desk: Desk,
    reader: IntentReader,
) -> None:
    await open_ticket(desk, reader, "I need a person: I was charged twice for my order")
    await open_ticket(desk, reader, "Please get me an agent, someone used my card without me")
    await open_ticket(desk, reader, "Agent please, my mother passed away and I need help")

    everything = await desk.queue()
    assert {t.skill for t in everything} == {"billing", "fraud", "care"}
    [fraud] = await desk.queue(skills=["fraud"])
    assert fraud.intent == "fraud"
    assert fraud.as_json()["skill"] == "fraud"
    assert {t.skill for t in await desk.queue(skills=["billing", "care"])} == {"billing", "care"}
    # Fraud and bereavement are urgent: ahead of billing at the same severity.
    assert everything[-1].skill == "billing"
    assert AgentSkills({"alice": ["fraud"]}).of("alice") == ["fraud"]
    assert AgentSkills({"alice": ["fraud"]}).of("bob") == []


async def test_a_turn_without_an_intent_lands_in_the_general_queue(
    desk: Desk,
) -> None:
    await desk.route(
        turn_event("conv-plain", "agent please"), lambda _: decision(RouteTarget.HUMAN)
    )
    [ticket] = await desk.queue()
    assert (ticket.intent, ticket.skill) == ("general", "general")
