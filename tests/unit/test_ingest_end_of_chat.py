"""The customer ends the chat: the WebSocket frame and POST .../end through the intake.

A recording bus stands in for Kafka and fakeredis for Redis (the same paths run against the
real Redis and broker in tests/integration/test_ingest_end_of_chat.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient

from services.ingest.intake import ended_event_id
from shared.events import (
    Channel,
    CloseReason,
    ConversationClosedEvent,
    FeedbackReceivedEvent,
    TurnReceivedEvent,
)
from shared.topics import Topic
from tests.kit import RecordingBus

WS_URL = "/v1/conversations/conv-1/ws?customer_id=web-abc"
END_URL = "/v1/conversations/conv-1/end"
MESSAGES_URL = "/v1/conversations/conv-1/messages"
WIDGET = Path(__file__).resolve().parents[2] / "services/ingest/static/widget.js"


def test_end_frame_publishes_conversation_closed_and_tells_the_conversation(
    client: TestClient, bus: RecordingBus
) -> None:
    with client.websocket_connect(WS_URL) as ws:
        ws.send_text(json.dumps({"type": "end", "client_message_id": "end-1"}))
        frame = ws.receive_json()

    assert frame["type"] == "ended"
    assert frame["reason"] == "ended"
    assert frame["client_message_id"] == "end-1"
    assert frame["duplicate"] is False
    [(topic, event, confirmed)] = bus.published
    assert topic is Topic.CONVERSATION_CLOSED
    assert confirmed
    assert isinstance(event, ConversationClosedEvent)
    assert frame["event_id"] == str(event.event_id) == str(ended_event_id("conv-1"))
    assert event.payload.reason is CloseReason.ENDED
    assert event.conversation_id == "conv-1"
    assert event.customer_id == "web-abc"
    assert event.channel is Channel.WEB


def test_a_second_end_is_the_first_and_publishes_nothing(
    client: TestClient, bus: RecordingBus
) -> None:
    with client.websocket_connect(WS_URL) as ws:
        ws.send_text(json.dumps({"type": "end", "client_message_id": "end-1"}))
        first = ws.receive_json()
        ws.send_text(json.dumps({"type": "end", "client_message_id": "end-2"}))
        second = ws.receive_json()
    response = client.post(END_URL, json={"customer_id": "web-abc", "channel": "web"})

    assert second["duplicate"] is True
    assert second["event_id"] == first["event_id"]
    assert response.status_code == 202
    assert response.json()["duplicate"] is True
    assert response.json()["event_id"] == first["event_id"]
    assert len(bus.events(ConversationClosedEvent)) == 1


def test_after_the_end_messages_are_refused_but_the_rating_is_taken(
    client: TestClient, bus: RecordingBus
) -> None:
    with client.websocket_connect(WS_URL) as ws:
        ws.send_text(json.dumps({"type": "message", "text": "hello", "client_message_id": "m1"}))
        assert ws.receive_json()["type"] == "accepted"
        ws.send_text(json.dumps({"type": "end"}))
        assert ws.receive_json()["type"] == "ended"
        ws.send_text(json.dumps({"type": "message", "text": "one more", "client_message_id": "m2"}))
        refused = ws.receive_json()
        ws.send_text(json.dumps({"type": "rating", "rating": 5, "client_message_id": "rt-1"}))
        rated = ws.receive_json()
    posted = client.post(MESSAGES_URL, json={"customer_id": "web-abc", "text": "and again"})

    assert refused["type"] == "error"
    assert refused["status"] == 409
    assert refused["error"] == "conversation_ended"
    assert refused["client_message_id"] == "m2"
    assert posted.status_code == 409
    assert posted.json()["error"] == "conversation_ended"
    assert rated["type"] == "rating_accepted"
    assert [type(e) for _, e, _ in bus.published] == [
        TurnReceivedEvent,
        ConversationClosedEvent,
        FeedbackReceivedEvent,
    ]


def test_only_the_owner_may_end_a_conversation(client: TestClient, bus: RecordingBus) -> None:
    with client.websocket_connect(WS_URL) as ws:
        ws.send_text(json.dumps({"type": "message", "text": "hello"}))
        assert ws.receive_json()["type"] == "accepted"

    someone_else = client.post(END_URL, json={"customer_id": "web-other"})
    unknown = client.post("/v1/conversations/conv-nobody/end", json={"customer_id": "web-abc"})

    assert someone_else.status_code == 404
    assert unknown.status_code == 404
    assert someone_else.json()["error"] == unknown.json()["error"] == "conversation_not_found"
    assert bus.events(ConversationClosedEvent) == []


def test_post_end_validates_its_body(client: TestClient, bus: RecordingBus) -> None:
    with client.websocket_connect(WS_URL) as ws:
        ws.send_text(json.dumps({"type": "message", "text": "hello"}))
        assert ws.receive_json()["type"] == "accepted"

    for body, field in (
        ({}, "customer_id"),
        ({"customer_id": "web-abc", "channel": "sms"}, "channel"),
        ({"customer_id": "web-abc", "reason": "idle"}, "reason"),
    ):
        response = client.post(END_URL, json=body)
        assert response.status_code == 422, body
        assert field in [d["field"] for d in response.json()["details"]]
    assert bus.events(ConversationClosedEvent) == []

    ended = client.post(END_URL, json={"customer_id": "web-abc", "channel": "web"})
    assert ended.status_code == 202
    assert ended.json()["status"] == "ended"
    [event] = bus.events(ConversationClosedEvent)
    assert event.channel is Channel.WEB


def test_an_end_the_broker_refused_is_published_by_the_retry(
    client: TestClient, bus: RecordingBus
) -> None:
    with client.websocket_connect(WS_URL) as ws:
        ws.send_text(json.dumps({"type": "message", "text": "hello"}))
        assert ws.receive_json()["type"] == "accepted"
        bus.fail_with = ConnectionError("broker down")
        ws.send_text(json.dumps({"type": "end", "client_message_id": "end-1"}))
        refused = ws.receive_json()
        bus.fail_with = None
        ws.send_text(json.dumps({"type": "end", "client_message_id": "end-1"}))
        ended = ws.receive_json()

    assert refused["type"] == "error"
    assert refused["status"] == 503
    assert ended["type"] == "ended"
    assert ended["duplicate"] is False
    assert len(bus.events(ConversationClosedEvent)) == 1


def test_the_widget_sends_the_end_and_shows_the_survey_after_it() -> None:
    script = WIDGET.read_text()

    assert "type: 'end'" in script
    assert "case 'ended': onEnded(f)" in script
    assert "$end.addEventListener('click', endChat)" in script
