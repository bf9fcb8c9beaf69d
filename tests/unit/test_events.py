"""Unit tests for the event envelope and payload contracts."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared.events import (
    MAX_MESSAGE_CHARS,
    SCHEMA_VERSION,
    CareFinding,
    Channel,
    ConversationContext,
    CustomerMessage,
    DeadLetter,
    EmotionAnalysis,
    EmotionLabel,
    HistoryTurn,
    ReplyDelta,
    ReplyDeltaEvent,
    ReplyFlag,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    RouteReason,
    RouteTarget,
    RoutingDecision,
    Signal,
    TurnAnalyzed,
    TurnAnalyzedEvent,
    TurnContextualized,
    TurnContextualizedEvent,
    TurnReceived,
    TurnReceivedEvent,
    TurnRouted,
    TurnRoutedEvent,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def message(text: str = "where is my parcel") -> CustomerMessage:
    return CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=NOW)


def analysis() -> EmotionAnalysis:
    scores = dict.fromkeys(EmotionLabel, 0.0)
    scores[EmotionLabel.ANXIETY] = 0.8
    return EmotionAnalysis(
        label=EmotionLabel.ANXIETY,
        scores=scores,
        sentiment=-0.3,
        intensity=0.6,
        signals=[Signal(name="urgency", evidence="asap")],
        model="test-model",
    )


def received_event(**overrides: Any) -> TurnReceivedEvent:
    fields: dict[str, Any] = {
        "conversation_id": "conv-1",
        "customer_id": "cust:42@example",
        "channel": Channel.WEB,
        "payload": TurnReceived(message=message()),
    }
    fields.update(overrides)
    return TurnReceivedEvent.create(**fields)


def contextualized() -> TurnContextualized:
    return TurnContextualized(
        message=message(),
        emotion=analysis(),
        context=ConversationContext(
            recent_turns=[HistoryTurn(role=Role.CUSTOMER, text="hello", at=NOW)],
            source="cache",
        ),
    )


# --- create ---------------------------------------------------------------------------------


def test_create_gives_fresh_uuid4_and_hex_trace_id() -> None:
    first = received_event()
    second = received_event()

    assert first.event_id.version == 4
    assert second.event_id.version == 4
    assert first.event_id != second.event_id
    assert re.fullmatch(r"[0-9a-f]{32}", first.trace_id)
    assert first.trace_id != second.trace_id
    assert first.event_type == "turn.received"
    assert first.schema_version == SCHEMA_VERSION
    assert first.causation_id is None
    assert first.occurred_at.tzinfo is not None


def test_create_keeps_a_given_trace_id() -> None:
    trace = "0123456789abcdef0123456789abcdef"

    assert received_event(trace_id=trace).trace_id == trace


# --- derive ---------------------------------------------------------------------------------


def test_derive_copies_identity_and_sets_causation() -> None:
    source = received_event()
    payload = TurnAnalyzed(message=source.payload.message, emotion=analysis())

    derived = source.derive(TurnAnalyzedEvent, payload)

    assert isinstance(derived, TurnAnalyzedEvent)
    assert derived.event_type == "turn.analyzed"
    assert derived.conversation_id == source.conversation_id
    assert derived.customer_id == source.customer_id
    assert derived.channel is source.channel
    assert derived.trace_id == source.trace_id
    assert derived.causation_id == source.event_id
    assert derived.event_id != source.event_id
    assert derived.payload == payload


def test_derive_event_id_is_deterministic() -> None:
    source = received_event()
    payload = TurnAnalyzed(message=source.payload.message, emotion=analysis())

    first = source.derive(TurnAnalyzedEvent, payload)
    again = source.derive(TurnAnalyzedEvent, payload)

    assert first.event_id == again.event_id
    assert first.event_id == uuid.uuid5(source.event_id, "turn.analyzed")
    assert first.event_id.version == 5


def test_derive_event_id_differs_by_part_and_by_target_type() -> None:
    source = received_event()
    turn_id = source.payload.message.turn_id
    delta = ReplyDelta(turn_id=turn_id, reply_id=uuid.uuid4(), seq=0, text="hi")

    part0 = source.derive(ReplyDeltaEvent, delta, part=":0")
    part1 = source.derive(ReplyDeltaEvent, delta, part=":1")
    no_part = source.derive(ReplyDeltaEvent, delta)
    other_type = source.derive(
        TurnAnalyzedEvent, TurnAnalyzed(message=source.payload.message, emotion=analysis())
    )

    ids = {part0.event_id, part1.event_id, no_part.event_id, other_type.event_id}
    assert len(ids) == 4


def test_derive_from_a_different_source_gives_a_different_id() -> None:
    payload = TurnAnalyzed(message=message(), emotion=analysis())

    one = received_event().derive(TurnAnalyzedEvent, payload)
    two = received_event().derive(TurnAnalyzedEvent, payload)

    assert one.event_id != two.event_id


# --- serialisation --------------------------------------------------------------------------


def test_event_type_is_serialised_and_round_trips() -> None:
    event = received_event()

    raw = event.model_dump_json()

    assert '"event_type":"turn.received"' in raw
    assert '"text":"where is my parcel"' in raw
    restored = TurnReceivedEvent.model_validate_json(raw)
    assert restored == event
    assert restored.payload.message.text == "where is my parcel"


def test_routed_event_round_trips_with_nested_payload() -> None:
    ctx = contextualized()
    routed = TurnRouted(
        **dict(ctx),
        route=RoutingDecision(target=RouteTarget.HUMAN, policy="p", reasons=[]),
    )
    event = received_event().derive(TurnRoutedEvent, routed)

    restored = TurnRoutedEvent.model_validate_json(event.model_dump_json())

    assert restored == event
    assert restored.payload.route.target is RouteTarget.HUMAN
    assert restored.payload.emotion.scores[EmotionLabel.ANXIETY] == 0.8
    assert restored.payload.context.recent_turns[0].role is Role.CUSTOMER


def test_wrong_event_type_is_rejected_on_parse() -> None:
    raw = received_event().model_dump_json().replace("turn.received", "turn.analyzed")

    with pytest.raises(ValidationError):
        TurnReceivedEvent.model_validate_json(raw)


# --- validation -----------------------------------------------------------------------------


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValidationError, match="received_at"):
        CustomerMessage(turn_id=uuid.uuid4(), text="hi", received_at=datetime(2025, 1, 1))


def test_naive_occurred_at_is_rejected() -> None:
    event = received_event()
    fields = event.model_dump()
    fields["occurred_at"] = datetime(2025, 1, 1)

    with pytest.raises(ValidationError, match="occurred_at"):
        TurnReceivedEvent.model_validate(fields)


@pytest.mark.parametrize(
    "conversation_id",
    ["has space", "x" * 129, "", "-leading-dash", "tab\there", "newline\n", "slash/inside"],
)
def test_bad_conversation_ids_are_rejected(conversation_id: str) -> None:
    with pytest.raises(ValidationError, match="conversation_id"):
        received_event(conversation_id=conversation_id)


@pytest.mark.parametrize("conversation_id", ["a", "x" * 128, "Conv_1.2:3@b-c"])
def test_good_conversation_ids_are_accepted(conversation_id: str) -> None:
    assert received_event(conversation_id=conversation_id).conversation_id == conversation_id


def test_empty_text_is_rejected() -> None:
    with pytest.raises(ValidationError, match="text"):
        message("")


def test_text_over_the_limit_is_rejected_and_at_the_limit_accepted() -> None:
    assert len(message("x" * MAX_MESSAGE_CHARS).text) == MAX_MESSAGE_CHARS
    with pytest.raises(ValidationError, match="text"):
        message("x" * (MAX_MESSAGE_CHARS + 1))


# --- a tolerant reader (rolling deploys: old consumers read new producers' events) ------------


def with_field(raw: str, path: list[str], name: str, value: Any) -> str:
    """`raw` (an event's JSON) with `name` set to `value` in the object at `path`."""
    data = json.loads(raw)
    target = data
    for key in path:
        target = target[key]
    target[name] = value
    return json.dumps(data)


def test_fields_a_newer_producer_added_are_ignored_on_read() -> None:
    event = received_event()
    raw = with_field(event.model_dump_json(), [], "surprise", 1)
    raw = with_field(raw, ["payload", "message"], "new_field", {"x": [1, 2]})
    parsed = TurnReceivedEvent.model_validate_json(raw)
    assert parsed == event
    assert "surprise" not in parsed.model_dump_json()


def test_list_items_with_values_this_version_does_not_know_are_left_out() -> None:
    event = received_event().derive(
        TurnAnalyzedEvent, TurnAnalyzed(message=message(), emotion=analysis())
    )
    data = json.loads(event.model_dump_json())
    data["payload"]["emotion"]["signals"].append({"name": "from_the_future", "evidence": "x"})
    parsed = TurnAnalyzedEvent.model_validate_json(json.dumps(data))
    assert [s.name for s in parsed.payload.emotion.signals] == ["urgency"]

    reply = ReplyGenerated(
        turn_id=uuid.uuid4(),
        reply_id=uuid.uuid4(),
        author=Role.BOT,
        text="Happy to help.",
        care_findings=[CareFinding(check="tone", flag=ReplyFlag.UNKIND_TONE, detail="x")],
    )
    generated = received_event().derive(ReplyGeneratedEvent, reply)
    data = json.loads(generated.model_dump_json())
    data["payload"]["care_findings"].append({"check": "telepathy", "flag": "unkind_tone"})
    data["payload"]["care_findings"].append({"check": "tone", "flag": "new_flag"})
    parsed_reply = ReplyGeneratedEvent.model_validate_json(json.dumps(data))
    assert [f.check for f in parsed_reply.payload.care_findings] == ["tone"]


def test_other_errors_in_list_items_still_fail() -> None:
    event = received_event().derive(
        TurnAnalyzedEvent, TurnAnalyzed(message=message(), emotion=analysis())
    )
    data = json.loads(event.model_dump_json())
    data["payload"]["emotion"]["signals"].append({"name": "urgency", "weight": "heavy"})
    with pytest.raises(ValidationError, match="weight"):
        TurnAnalyzedEvent.model_validate_json(json.dumps(data))


def test_an_unknown_value_in_a_single_field_still_fails() -> None:
    # No safe reading exists (a reply for channel "pigeon"): the event is dead-lettered and
    # replayed once every consumer runs the new code.
    raw = with_field(received_event().model_dump_json(), [], "channel", "pigeon")
    with pytest.raises(ValidationError, match="channel"):
        TurnReceivedEvent.model_validate_json(raw)


def test_bad_trace_id_is_rejected() -> None:
    with pytest.raises(ValidationError, match="trace_id"):
        received_event(trace_id="0123456789ABCDEF0123456789ABCDEF")


def test_events_are_frozen() -> None:
    event = received_event()

    with pytest.raises(ValidationError):
        event.conversation_id = "other"  # type: ignore[misc]


# --- payload growth -------------------------------------------------------------------------


def test_turn_routed_builds_from_turn_contextualized() -> None:
    ctx = contextualized()
    decision = RoutingDecision(
        target=RouteTarget.BOT,
        reasons=[RouteReason(code="default", detail="none")],
        policy="test-policy",
    )

    routed = TurnRouted(**dict(ctx), route=decision)

    assert routed.message == ctx.message
    assert routed.emotion == ctx.emotion
    assert routed.context == ctx.context
    assert routed.route == decision
    assert isinstance(routed, TurnContextualized)


def test_contextualized_event_carries_its_type() -> None:
    event = received_event().derive(TurnContextualizedEvent, contextualized())

    assert event.event_type == "turn.contextualized"
    assert TurnContextualizedEvent.type_name() == "turn.contextualized"


# --- dead letters ---------------------------------------------------------------------------


def dead_letter() -> DeadLetter:
    return DeadLetter(
        source_topic="turn.received",
        partition=0,
        offset=7,
        service="emotion",
        consumer_group="cbd-emotion",
        reason="invalid event",
        error_type="ValidationError",
        attempts=1,
        payload="{not json",
    )


def test_dead_letter_defaults() -> None:
    first = dead_letter()
    second = dead_letter()

    assert first.event_type == "deadletter"
    assert first.dead_letter_id.version == 4
    assert first.dead_letter_id != second.dead_letter_id
    assert first.failed_at.utcoffset() is not None
    assert first.failed_at.utcoffset() == timedelta(0)
    assert first.payload_encoding == "utf-8"
    assert first.key is None
    assert first.schema_version == SCHEMA_VERSION
    assert '"event_type":"deadletter"' in first.model_dump_json()


def test_dead_letter_round_trips() -> None:
    letter = dead_letter()

    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
