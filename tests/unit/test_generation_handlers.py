"""Unit tests for the generation service's handler, with a fake bus and a fake LLM."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from services.generation.fence import OwnershipFence
from services.generation.handlers import GenerationHandlers
from services.generation.prompt import FALLBACK_REPLY, HANDOFF_NOTICE
from services.generation.settings import GenerationSettings
from services.generation.variants import Variant
from shared.events import (
    Channel,
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    Envelope,
    Handoff,
    ReplyFlag,
    Role,
    RouteReason,
    RouteTarget,
    RoutingDecision,
    TurnReceived,
    TurnReceivedEvent,
    TurnRouted,
    TurnRoutedEvent,
)
from shared.kafka import EventBus
from shared.llm import ChatClient, ChatMessage, LLMUnavailable, StreamEnd
from shared.topics import Topic
from tests.kit import RecordingBus


class FakeLLM:
    """Stands in for ChatClient: yields the given pieces, then raises `error` if set."""

    model = "fake-model"

    def __init__(self, pieces: Sequence[str] = (), error: Exception | None = None) -> None:
        self.pieces = list(pieces)
        self.error = error
        self.calls: list[dict[str, Any]] = []

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        end: StreamEnd | None = None,
    ) -> AsyncIterator[str]:
        self.calls.append(
            {
                "messages": list(messages),
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
            }
        )
        for piece in self.pieces:
            yield piece
        if self.error is not None:
            raise self.error


CANARY = "zqabcdef012345"


def settings(**overrides: Any) -> GenerationSettings:
    values: dict[str, Any] = {
        "delta_flush_ms": 0,
        "max_tokens": 77,
        "temperature": 0.3,
        "top_p": 0.8,
        "canary": CANARY,
        # These tests are about token streaming and the guardrails (mode `llm`); the care
        # check's sentence-by-sentence mode has its own tests (test_generation_care.py).
        "reply_mode": "llm",
        "relevance_check": False,
    }
    return GenerationSettings(**(values | overrides))


def routed_event(target: RouteTarget, text: str = "where is my parcel") -> TurnRoutedEvent:
    message = CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=datetime.now(UTC))
    received = TurnReceivedEvent.create(
        conversation_id="conv-1",
        customer_id="cust-1",
        channel=Channel.WEB,
        payload=TurnReceived(message=message),
    )
    scores = dict.fromkeys(EmotionLabel, 0.0)
    scores[EmotionLabel.NEUTRAL] = 1.0
    payload = TurnRouted(
        message=message,
        emotion=EmotionAnalysis(
            label=EmotionLabel.NEUTRAL, scores=scores, sentiment=0.0, intensity=0.0, model="t"
        ),
        context=ConversationContext(),
        route=RoutingDecision(
            target=target, reasons=[RouteReason(code="test", detail="")], policy="test"
        ),
    )
    return received.derive(TurnRoutedEvent, payload)


async def run(event: TurnRoutedEvent, llm: FakeLLM) -> RecordingBus:
    bus = RecordingBus()
    handlers = GenerationHandlers(cast(EventBus, bus), cast(ChatClient, llm), settings())
    await handlers.on_turn_routed(event)
    await handlers.drain()
    return bus


def assert_envelope_follows(derived: Envelope, source: TurnRoutedEvent) -> None:
    assert derived.causation_id == source.event_id
    assert derived.conversation_id == source.conversation_id
    assert derived.customer_id == source.customer_id
    assert derived.trace_id == source.trace_id
    assert derived.channel is source.channel


async def test_human_route_sends_the_handoff_notice_and_assists_the_agent() -> None:
    event = routed_event(RouteTarget.HUMAN, "let me talk to a real person")
    llm = FakeLLM(["I'm sorry ", "for the wait."])

    bus = await run(event, llm)

    assert bus.deltas() == []
    [reply_event] = bus.replies()
    reply = reply_event.payload
    assert reply.author is Role.SYSTEM
    assert reply.text == HANDOFF_NOTICE
    assert "handoff" in reply.flags
    assert reply.turn_id == event.payload.message.turn_id
    assert reply.reply_id == uuid.uuid5(event.event_id, "reply")
    assert reply.turn_received_at == event.payload.message.received_at
    assert_envelope_follows(reply_event, event)
    # The LLM writes only a suggestion for the agent, never a reply to the customer.
    [assist] = bus.assists()
    assert assist.payload.suggestions == ["I'm sorry for the wait."]
    assert assist.payload.tips
    # The notice answered the turn: the edge waits for it, not for these suggestions.
    assert assist.payload.replied is True
    assert_envelope_follows(assist, event)


async def test_bot_route_streams_deltas_then_the_full_reply() -> None:
    event = routed_event(RouteTarget.BOT)
    pieces = ["I'm", " sorry", " about", " the", " delay."]

    bus = await run(event, FakeLLM(pieces))

    deltas = bus.deltas()
    replies = bus.replies()
    assert len(replies) == 1
    assert bus.published[-1][1] is replies[0]
    reply = replies[0].payload
    reply_id = uuid.uuid5(event.event_id, "reply")

    assert deltas
    assert [d.payload.seq for d in deltas] == list(range(len(deltas)))
    assert "".join(d.payload.text for d in deltas) == reply.text == "I'm sorry about the delay."
    assert len({d.event_id for d in deltas} | {replies[0].event_id}) == len(deltas) + 1
    assert all(d.payload.reply_id == reply_id for d in deltas)
    assert all(d.payload.turn_id == event.payload.message.turn_id for d in deltas)
    assert all(confirm is False for t, _, confirm in bus.published if t is Topic.REPLY_DELTA)
    for delta in deltas:
        assert_envelope_follows(delta, event)

    assert reply.author is Role.BOT
    assert reply.reply_id == reply_id
    assert reply.flags == []
    assert reply.model == "fake-model"
    assert reply.tokens == len(pieces)
    assert reply.ttft_ms is not None
    assert reply.latency_ms is not None
    assert_envelope_follows(replies[0], event)


async def test_with_no_flush_interval_every_piece_is_its_own_delta() -> None:
    pieces = ["a", "b", "c"]

    bus = await run(routed_event(RouteTarget.BOT), FakeLLM(pieces))

    assert [d.payload.text for d in bus.deltas()] == pieces


async def test_llm_gets_the_built_prompt_and_settings() -> None:
    event = routed_event(RouteTarget.BOT, "hello there")
    llm = FakeLLM(["hi"])

    await run(event, llm)

    assert len(llm.calls) == 1
    call = llm.calls[0]
    assert call["max_tokens"] == 77
    assert call["temperature"] == 0.3
    assert call["top_p"] == 0.8
    handlers = GenerationHandlers(cast(EventBus, RecordingBus()), cast(ChatClient, llm), settings())
    care_prompt = handlers.prompts.system_prompts[Variant.CARE]
    assert call["messages"][0] == ChatMessage("system", care_prompt)
    assert call["messages"][-1] == ChatMessage("user", "<customer>hello there</customer>")


async def test_redelivery_produces_the_same_ids() -> None:
    event = routed_event(RouteTarget.BOT)
    pieces = ["one", " two"]

    first = await run(event, FakeLLM(pieces))
    second = await run(event, FakeLLM(pieces))

    assert [e.event_id for _, e, _ in first.published] == [
        e.event_id for _, e, _ in second.published
    ]
    assert first.replies()[0].payload.reply_id == second.replies()[0].payload.reply_id


async def test_different_turns_get_different_reply_ids() -> None:
    one = await run(routed_event(RouteTarget.BOT), FakeLLM(["x"]))
    two = await run(routed_event(RouteTarget.BOT), FakeLLM(["x"]))

    assert one.replies()[0].payload.reply_id != two.replies()[0].payload.reply_id


@pytest.mark.parametrize(
    ("kind", "flag"),
    [
        ("connection", "connection"),
        ("first_token_timeout", "first_token_timeout"),
        # Every error status is one known flag; the status itself is in the logs and metrics.
        ("http_503", "http_error"),
    ],
)
async def test_unavailable_llm_gives_the_fallback_reply(kind: str, flag: str) -> None:
    event = routed_event(RouteTarget.BOT)

    bus = await run(event, FakeLLM(error=LLMUnavailable(kind, "down")))

    assert bus.deltas() == []
    replies = bus.replies()
    assert len(replies) == 1
    reply = replies[0].payload
    assert reply.text == FALLBACK_REPLY
    assert reply.author is Role.BOT
    assert {"llm_fallback", "needs_human", flag} <= set(reply.flags)
    assert set(reply.flags) <= {f.value for f in ReplyFlag}
    assert reply.reply_id == uuid.uuid5(event.event_id, "reply")
    assert reply.tokens == 0


async def test_failure_mid_stream_still_ends_with_the_fallback() -> None:
    error = LLMUnavailable("timeout", "stalled")

    bus = await run(routed_event(RouteTarget.BOT), FakeLLM(["partial", " answer"], error=error))

    reply = bus.replies()[0].payload
    assert reply.text == FALLBACK_REPLY
    assert {"llm_fallback", "needs_human", "timeout"} <= set(reply.flags)
    assert bus.published[-1][0] is Topic.REPLY_GENERATED


@pytest.mark.parametrize("pieces", [[], ["   "], [" ", "\n", "\t "]])
async def test_blank_completion_gives_the_fallback_reply(pieces: list[str]) -> None:
    bus = await run(routed_event(RouteTarget.BOT), FakeLLM(pieces))

    replies = bus.replies()
    assert len(replies) == 1
    reply = replies[0].payload
    assert reply.text == FALLBACK_REPLY
    assert reply.author is Role.BOT
    assert {"llm_fallback", "needs_human", "empty_completion"} <= set(reply.flags)


async def test_reply_text_is_stripped() -> None:
    bus = await run(routed_event(RouteTarget.BOT), FakeLLM(["  Hello", " there  \n"]))

    assert bus.replies()[0].payload.text == "Hello there"


class FakeFence:
    """Says the bot may speak for the first `allowed` checks, then that a person took over."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.checks = 0

    async def bot_may_speak(self, conversation_id: str, epoch: int) -> bool:
        self.checks += 1
        return self.checks <= self.allowed


async def run_fenced(event: TurnRoutedEvent, llm: FakeLLM, fence: FakeFence) -> RecordingBus:
    bus = RecordingBus()
    handlers = GenerationHandlers(
        cast(EventBus, bus), cast(ChatClient, llm), settings(), cast(OwnershipFence, fence)
    )
    await handlers.on_turn_routed(event)
    await handlers.drain()
    return bus


async def test_a_person_taking_over_mid_reply_silences_the_bot() -> None:
    llm = FakeLLM(["Let ", "me ", "check ", "that."])
    bus = await run_fenced(routed_event(RouteTarget.BOT), llm, FakeFence(allowed=2))
    assert bus.replies() == []
    # What streamed is taken back: the last slice withdraws the reply, after the others.
    deltas = [d.payload for d in bus.deltas()]
    assert deltas, "the fence allowed the first slices"
    assert [d.withdrawn for d in deltas] == [False] * (len(deltas) - 1) + [True]
    assert [d.seq for d in deltas] == list(range(len(deltas)))
    assert len({d.reply_id for d in deltas}) == 1
    assert deltas[-1].text == ""


async def test_a_turn_routed_after_a_takeover_gets_no_bot_reply() -> None:
    bus = await run_fenced(routed_event(RouteTarget.BOT), FakeLLM(["Hi"]), FakeFence(allowed=0))
    assert bus.published == []


async def test_a_person_owning_the_conversation_means_no_reply_at_all() -> None:
    event = routed_event(RouteTarget.HUMAN)
    route = event.payload.route.model_copy(
        update={"handoff": Handoff(ticket_id=uuid.uuid4(), new=False, owner="agent")}
    )
    event = event.model_copy(update={"payload": event.payload.model_copy(update={"route": route})})
    bus = await run(event, FakeLLM(["Hi"]))
    assert bus.replies() == []
    assert bus.deltas() == []
    [assist] = bus.assists()
    assert assist.payload.suggestions == ["Hi"]
    # Nothing else answers the turn: the suggestions settle it at the edge.
    assert assist.payload.replied is False


async def test_assist_without_the_llm_still_coaches() -> None:
    event = routed_event(RouteTarget.HUMAN)
    bus = await run(event, FakeLLM([], error=LLMUnavailable("connection", "down")))
    [assist] = bus.assists()
    assert assist.payload.suggestions == []
    # The feeling's strategy, then the scenario's playbook ("where is my parcel").
    assert assist.payload.tips[0] == "Be friendly and efficient."
    assert assist.payload.tips[1].startswith("A late or missing delivery: ")
    assert len(assist.payload.tips) == 2


async def test_a_new_handoff_tells_the_customer_the_wait() -> None:
    event = routed_event(RouteTarget.HUMAN)
    handoff = Handoff(ticket_id=uuid.uuid4(), new=True, owner="queued", eta_minutes=6)
    route = event.payload.route.model_copy(update={"handoff": handoff})
    event = event.model_copy(update={"payload": event.payload.model_copy(update={"route": route})})
    bus = await run(event, FakeLLM(["Hi"]))
    [reply] = bus.replies()
    assert "about 6 minutes" in reply.payload.text
    assert reply.payload.author is Role.SYSTEM


async def test_a_queued_conversation_nobody_announced_gets_the_notice_on_the_next_turn() -> None:
    """A flagged bot reply queued the conversation without telling the customer; the ticket
    is not new on their next turn, but that turn must not get silence."""
    event = routed_event(RouteTarget.HUMAN)
    handoff = Handoff(
        ticket_id=uuid.uuid4(), new=False, announce=True, owner="queued", eta_minutes=4
    )
    route = event.payload.route.model_copy(update={"handoff": handoff})
    event = event.model_copy(update={"payload": event.payload.model_copy(update={"route": route})})
    bus = await run(event, FakeLLM(["Hi"]))
    [reply] = bus.replies()
    assert reply.payload.author is Role.SYSTEM
    assert "handoff" in reply.payload.flags
    assert "about 4 minutes" in reply.payload.text
    assert bus.deltas() == []


async def test_a_burst_in_a_conversation_a_person_holds_gets_one_suggestion() -> None:
    llm = FakeLLM(["Sorry for the wait."])
    bus = RecordingBus()
    handlers = GenerationHandlers(cast(EventBus, bus), cast(ChatClient, llm), settings())
    for _ in range(5):
        await handlers.on_turn_routed(routed_event(RouteTarget.HUMAN))
        await handlers.drain()
    suggestions = [a.payload.suggestions for a in bus.assists()]
    assert suggestions == [["Sorry for the wait."], [], [], [], []]
    assert len(llm.calls) == 1


async def test_a_stale_turn_gets_tips_without_a_suggestion() -> None:
    event = routed_event(RouteTarget.HUMAN)
    old = event.payload.message.model_copy(
        update={"received_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)}
    )
    event = event.model_copy(update={"payload": event.payload.model_copy(update={"message": old})})
    llm = FakeLLM(["unused"])
    bus = await run(event, llm)
    [assist] = bus.assists()
    assert assist.payload.suggestions == []
    assert assist.payload.tips
    assert llm.calls == []
