"""Unit tests for the widget's edge: script and demo page, ratings, the resume parameter.

No broker: a recording bus stands in for Kafka and fakeredis for Redis, and without a fanout
frames go straight to the socket (the frame buffer itself is tested against real Redis in
tests/integration/test_ingest_resume.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from services.ingest.app import create_app
from services.ingest.delivery import parse_frame_id
from services.ingest.settings import IngestSettings
from shared.events import Channel, FeedbackReceivedEvent
from shared.topics import Topic
from tests.kit import RecordingBus

WS_URL = "/v1/conversations/conv-1/ws?customer_id=web-abc"
FEEDBACK_URL = "/v1/conversations/conv-1/feedback"


# --- script and demo page ---------------------------------------------------------------------


def test_widget_script_is_served_as_cacheable_javascript(client: TestClient) -> None:
    response = client.get("/widget.js")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "etag" in response.headers
    assert "attachShadow" in response.text
    assert "/v1/conversations/" in response.text


def test_widget_demo_is_a_plain_page_with_one_script_tag(client: TestClient) -> None:
    response = client.get("/widget-demo")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.count("<script") == 1
    assert '<script src="/widget.js" data-key="dev-widget-key" async></script>' in response.text


def test_widget_demo_carries_the_demo_key_when_one_is_configured() -> None:
    client = TestClient(create_app(IngestSettings(widget_demo_key='dev-widget-key"><b>')))
    response = client.get("/widget-demo")

    # Escaped: a key never breaks out of its attribute.
    assert 'data-key="dev-widget-key&quot;&gt;&lt;b&gt;"' in response.text


# --- rating over the WebSocket ----------------------------------------------------------------


def test_rating_frame_publishes_feedback_and_is_acknowledged(
    client: TestClient, bus: RecordingBus
) -> None:
    with client.websocket_connect(WS_URL) as ws:
        ws.send_text(
            json.dumps(
                {
                    "type": "rating",
                    "rating": 4,
                    "comment": "  Quick and kind.  ",
                    "client_message_id": "rt-1",
                }
            )
        )
        ack = ws.receive_json()

    assert ack["type"] == "rating_accepted"
    assert ack["client_message_id"] == "rt-1"
    assert ack["duplicate"] is False
    assert len(bus.published) == 1
    topic, event, _ = bus.published[0]
    assert topic is Topic.FEEDBACK_RECEIVED
    assert isinstance(event, FeedbackReceivedEvent)
    assert ack["event_id"] == str(event.event_id)
    assert event.conversation_id == "conv-1"
    assert event.customer_id == "web-abc"
    assert event.channel is Channel.WEB
    assert event.payload.rating == 4
    assert event.payload.comment == "Quick and kind."
    assert event.payload.source == "customer"


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"rating": 0}, "rating"),
        ({"rating": 6}, "rating"),
        ({"rating": "4"}, "rating"),
        ({"rating": 4.5}, "rating"),
        ({"rating": True}, "rating"),
        ({}, "rating"),
        ({"rating": 3, "comment": "x" * 2001}, "comment"),
        ({"rating": 3, "reply_id": "not-a-uuid"}, "reply_id"),
    ],
    ids=["zero", "six", "string", "fraction", "bool", "missing", "long_comment", "bad_reply"],
)
def test_bad_rating_gets_an_error_frame_and_the_socket_stays_open(
    client: TestClient, bus: RecordingBus, frame: dict[str, Any], field: str
) -> None:
    with client.websocket_connect(WS_URL) as ws:
        ws.send_text(json.dumps({"type": "rating", "client_message_id": "rt-9", **frame}))
        error = ws.receive_json()
        assert error["type"] == "error"
        assert error["status"] == 422
        assert error["client_message_id"] == "rt-9"
        assert error["message"].startswith("invalid rating:")
        assert field in [d["field"] for d in error["details"]]

        ws.send_text(json.dumps({"type": "rating", "rating": 5}))
        assert ws.receive_json()["type"] == "rating_accepted"

    assert [e.payload.rating for _, e, _ in bus.published] == [5]  # type: ignore[attr-defined]


def test_socket_before_the_service_has_started_is_closed_try_again_later() -> None:
    client = TestClient(create_app(IngestSettings()))
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(WS_URL) as ws:
        ws.receive_json()

    assert closed.value.code == 1013


def test_rating_a_comment_with_a_card_number_keeps_only_its_token(
    client: TestClient, bus: RecordingBus
) -> None:
    with client.websocket_connect(WS_URL) as ws:
        comment = "refund to 5555 5555 5555 4444 please"
        ws.send_text(json.dumps({"type": "rating", "rating": 2, "comment": comment}))
        assert ws.receive_json()["type"] == "rating_accepted"

    event = bus.published[0][1]
    assert isinstance(event, FeedbackReceivedEvent)
    assert event.payload.comment == "refund to [card ending 4444] please"


# --- POST .../feedback --------------------------------------------------------------------------


def test_posted_feedback_is_202_and_published(client: TestClient, bus: RecordingBus) -> None:
    started = client.post(
        "/v1/conversations/conv-1/messages", json={"customer_id": "cust-7", "text": "hello"}
    )
    assert started.status_code == 202
    response = client.post(
        FEEDBACK_URL,
        json={"customer_id": "cust-7", "rating": 5, "comment": "Lovely", "channel": "email"},
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    topic, event, _ = bus.published[1]
    assert topic is Topic.FEEDBACK_RECEIVED
    assert isinstance(event, FeedbackReceivedEvent)
    assert body["event_id"] == str(event.event_id)
    assert event.channel is Channel.EMAIL
    assert event.customer_id == "cust-7"
    assert (event.payload.rating, event.payload.comment) == (5, "Lovely")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_id": "c", "rating": 9}, "rating"),
        ({"customer_id": "c", "rating": "5"}, "rating"),
        ({"customer_id": "c"}, "rating"),
        ({"rating": 3}, "customer_id"),
        ({"customer_id": "c", "rating": 3, "stars": 3}, "stars"),
        ({"customer_id": "c", "rating": 3, "comment": "x" * 2001}, "comment"),
    ],
    ids=["out_of_range", "string", "missing", "no_customer", "unknown_field", "long_comment"],
)
def test_bad_posted_feedback_is_422_naming_the_field(
    client: TestClient, bus: RecordingBus, body: dict[str, Any], field: str
) -> None:
    response = client.post(FEEDBACK_URL, json=body)

    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "invalid_request"
    assert field in [d["field"] for d in payload["details"]]
    assert bus.published == []


def test_posted_feedback_that_is_not_json_is_400_or_415(client: TestClient) -> None:
    malformed = client.post(
        FEEDBACK_URL, content=b"{oops", headers={"content-type": "application/json"}
    )
    wrong_type = client.post(FEEDBACK_URL, content=b"rating=5")

    assert malformed.status_code == 400
    assert wrong_type.status_code == 415


def test_posted_feedback_for_a_bad_conversation_id_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/conversations/-bad/feedback", json={"customer_id": "c", "rating": 3}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_conversation_id"


# --- resume parameter ---------------------------------------------------------------------------


@pytest.mark.parametrize("after", ["abc", "-1", "1-2-3", "1.5", "9" * 25])
def test_socket_with_a_bad_after_gets_an_error_then_close(client: TestClient, after: str) -> None:
    with client.websocket_connect(WS_URL + f"&after={after}") as ws:
        frame = ws.receive_json()
        assert frame["type"] == "error"
        assert frame["status"] == 400
        assert frame["error"] == "invalid_after"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()

    assert closed.value.code == 4400


def test_resuming_without_a_buffer_says_the_replay_is_incomplete(client: TestClient) -> None:
    with client.websocket_connect(WS_URL + "&after=0") as ws:
        frame = ws.receive_json()

    assert frame == {"type": "resumed", "replayed": 0, "last_id": "0-0", "complete": False}


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("0", (0, 0)), ("1732380000000-7", (1732380000000, 7)), ("15", (15, 0))],
)
def test_frame_ids_parse_to_ordered_pairs(raw: str, parsed: tuple[int, int]) -> None:
    assert parse_frame_id(raw) == parsed
    assert parse_frame_id("1732380000000-10") > parse_frame_id("1732380000000-9")
