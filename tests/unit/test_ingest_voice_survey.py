"""The voice channel's close: a caller's goodbye gets the keypad rating, the call's end closes.

The real routers and intake run on fakeredis with a recording bus; webhooks are signed with
Twilio's own `RequestValidator`, as Twilio signs them.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import cast

import fakeredis
import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from services.ingest.app import create_app
from services.ingest.channels.voice import VoiceReplies, is_goodbye
from services.ingest.edge import EdgeGuard
from services.ingest.intake import Intake
from services.ingest.ownership import Owners
from services.ingest.settings import IngestSettings
from shared import http
from shared.events import (
    Channel,
    CloseReason,
    ConversationClosedEvent,
    FeedbackReceivedEvent,
    TurnReceivedEvent,
)
from shared.kafka import EventBus
from tests.kit import RecordingBus

TOKEN = "twilio-test-token"
SID = "AC" + "1" * 32
CALLER = "+447700900123"


@dataclass
class Edge:
    client: TestClient
    bus: RecordingBus


@pytest.fixture
def edge() -> Edge:
    settings = IngestSettings(
        twilio_auth_token=TOKEN, twilio_account_sid=SID, voice_reply_timeout_s=0.05
    )
    redis = cast(aioredis.Redis, fakeredis.FakeAsyncRedis(decode_responses=True))
    bus = RecordingBus()
    app = create_app(settings)
    guard = EdgeGuard(settings, redis)
    intake = Intake(
        settings,
        cast(EventBus, bus),
        redis,
        guard,
        Owners(redis, settings.redis.key_prefix, settings.owner_ttl_s),
    )
    for collaborator in (guard, intake, VoiceReplies(redis, settings.redis.key_prefix)):
        http.provide(app, collaborator)
    return Edge(TestClient(app), bus)


def twilio(edge: Edge, path: str, **fields: str) -> str:
    """POST a signed Twilio webhook; the TwiML it answered."""
    params = {"AccountSid": SID, "From": CALLER, "To": "+15005550006", **fields}
    signature = RequestValidator(TOKEN).compute_signature(f"http://testserver{path}", params)
    response = edge.client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    return response.text


def verbs(twiml: str) -> list[str]:
    return [child.tag for child in ET.fromstring(twiml)]  # noqa: S314 (our own TwiML)


@pytest.mark.parametrize(
    ("speech", "closing"),
    [
        ("No, that's all, thanks. Bye!", True),
        ("Goodbye.", True),
        ("That is everything, thank you very much", True),
        ("Okay, bye then", True),
        ("I want to say goodbye to this contract", False),
        ("No thanks", False),
        ("Bye the way, where is my order?", False),
    ],
)
def test_only_a_whole_goodbye_closes_the_call(speech: str, closing: bool) -> None:
    assert is_goodbye(speech) is closing


def test_a_caller_who_says_goodbye_rates_the_call_on_the_keypad(edge: Edge) -> None:
    call = "CA" + uuid.uuid4().hex
    twilio(edge, "/v1/channels/twilio/voice/gather", CallSid=call, SpeechResult="Where is A1001?")
    assert len(edge.bus.events(TurnReceivedEvent)) == 1

    asked = twilio(
        edge, "/v1/channels/twilio/voice/gather", CallSid=call, SpeechResult="That's all, bye!"
    )
    # The goodbye is not a turn: the keypad question is asked instead.
    assert len(edge.bus.events(TurnReceivedEvent)) == 1
    gather = ET.fromstring(asked).find("Gather")  # noqa: S314 (our own TwiML)
    assert gather is not None
    assert gather.attrib["input"] == "dtmf"
    assert gather.attrib["action"] == "/v1/channels/twilio/voice/rating"

    done = twilio(edge, "/v1/channels/twilio/voice/rating", CallSid=call, Digits="4")
    assert verbs(done) == ["Say", "Hangup"]
    [rating] = edge.bus.events(FeedbackReceivedEvent)
    assert rating.conversation_id == f"call-{call}"
    assert rating.channel is Channel.VOICE
    assert rating.payload.rating == 4
    [closed] = edge.bus.events(ConversationClosedEvent)
    assert closed.conversation_id == f"call-{call}"
    assert closed.payload.reason is CloseReason.ENDED

    # Twilio retries the same digit, then reports the call completed: nothing new is counted.
    twilio(edge, "/v1/channels/twilio/voice/rating", CallSid=call, Digits="4")
    twilio(edge, "/v1/channels/twilio/voice/status", CallSid=call, CallStatus="completed")
    assert len(edge.bus.events(FeedbackReceivedEvent)) == 1
    assert len({e.event_id for e in edge.bus.events(ConversationClosedEvent)}) == 1


@pytest.mark.parametrize("digits", ["0", "9", "*", ""])
def test_a_key_that_is_not_a_rating_records_none_and_still_ends_the_call(
    edge: Edge, digits: str
) -> None:
    call = "CA" + uuid.uuid4().hex
    twilio(edge, "/v1/channels/twilio/voice/gather", CallSid=call, SpeechResult="Refund please")
    done = twilio(edge, "/v1/channels/twilio/voice/rating", CallSid=call, Digits=digits)
    assert verbs(done) == ["Say", "Hangup"]
    assert edge.bus.events(FeedbackReceivedEvent) == []
    assert len(edge.bus.events(ConversationClosedEvent)) == 1


def test_a_goodbye_before_any_question_just_ends_the_call(edge: Edge) -> None:
    call = "CA" + uuid.uuid4().hex
    answer = twilio(edge, "/v1/channels/twilio/voice/gather", CallSid=call, SpeechResult="bye")
    assert verbs(answer) == ["Say", "Hangup"]
    assert edge.bus.published == []


def test_a_hang_up_closes_the_calls_conversation(edge: Edge) -> None:
    call = "CA" + uuid.uuid4().hex
    twilio(edge, "/v1/channels/twilio/voice/gather", CallSid=call, SpeechResult="My bill is wrong")
    twilio(edge, "/v1/channels/twilio/voice/status", CallSid=call, CallStatus="in-progress")
    assert edge.bus.events(ConversationClosedEvent) == []
    twilio(edge, "/v1/channels/twilio/voice/status", CallSid=call, CallStatus="completed")
    [closed] = edge.bus.events(ConversationClosedEvent)
    assert closed.conversation_id == f"call-{call}"
    assert closed.channel is Channel.VOICE


def test_an_unsigned_status_callback_is_refused(edge: Edge) -> None:
    response = edge.client.post(
        "/v1/channels/twilio/voice/status",
        data={"CallSid": "CA1", "From": CALLER, "CallStatus": "completed"},
    )
    assert response.status_code == 403
    assert edge.bus.published == []
