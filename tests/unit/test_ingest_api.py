"""Unit tests for the ingest edge's HTTP and WebSocket validation (no broker, no Redis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from services.ingest.api import IngestAPI
from services.ingest.delivery import ConnectionHub
from services.ingest.settings import IngestSettings
from shared.events import MAX_MESSAGE_CHARS, Channel, TurnReceivedEvent
from shared.topics import Topic
from tests.unit.conftest import RecordingBus

URL = "/v1/conversations/conv-1/messages"
WS_URL = "/v1/conversations/conv-1/ws"


def fields_of(body: dict[str, Any]) -> list[str]:
    return [d["field"] for d in body.get("details", [])]


# --- POST -----------------------------------------------------------------------------------


def test_get_root_serves_the_chat_page(client: TestClient) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Care-by-Design" in response.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_post_without_json_content_type_is_415(
    client: TestClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = client.post(URL, content=b'{"customer_id":"c","text":"hi"}', headers=headers)

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_json_content_type_with_charset_is_accepted(client: TestClient, bus: RecordingBus) -> None:
    response = client.post(
        URL,
        content=b'{"customer_id":"c","text":"hi"}',
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )

    assert response.status_code == 202
    assert len(bus.published) == 1


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"text": "hi"', b"\xff\xfe\x00"])
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    response = client.post(URL, content=raw, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"


@pytest.mark.parametrize(
    "body",
    [
        {"customer_id": "c"},
        {"customer_id": "c", "text": ""},
        {"customer_id": "c", "text": "   \n\t  "},
        {"customer_id": "c", "text": "x" * (MAX_MESSAGE_CHARS + 1)},
        {"customer_id": "c", "text": 42},
    ],
    ids=["missing", "empty", "whitespace", "too_long", "not_a_string"],
)
def test_bad_text_is_422_naming_text(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post(URL, json=body)

    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "invalid_request"
    assert fields_of(payload) == ["text"]
    assert "text" in payload["message"]


def test_bad_customer_id_in_body_is_422(client: TestClient) -> None:
    response = client.post(URL, json={"customer_id": "has space", "text": "hi"})

    assert response.status_code == 422
    assert fields_of(response.json()) == ["customer_id"]


def test_non_object_body_is_422(client: TestClient) -> None:
    response = client.post(URL, json=["customer_id", "text"])

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_unknown_fields_are_422_naming_them(client: TestClient) -> None:
    response = client.post(URL, json={"customer_id": "c", "text": "hi", "priority": "vip"})

    assert response.status_code == 422
    payload = response.json()
    assert fields_of(payload) == ["priority"]
    assert "priority" in payload["message"]


@pytest.mark.parametrize("conversation_id", ["bad%20id", "-dash", "x" * 129, "a%0Ab"])
def test_bad_conversation_id_in_path_is_400(client: TestClient, conversation_id: str) -> None:
    response = client.post(
        f"/v1/conversations/{conversation_id}/messages", json={"customer_id": "c", "text": "hi"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_conversation_id"


def small_client() -> TestClient:
    api = IngestAPI(IngestSettings(max_body_bytes=1024), ConnectionHub())
    return TestClient(Starlette(routes=api.routes()))


def test_body_over_the_limit_is_413() -> None:
    with small_client() as client:
        response = client.post(URL, json={"customer_id": "c", "text": "x" * 2000})

    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_chunked_body_over_the_limit_is_413() -> None:
    def body() -> Iterator[bytes]:
        yield b'{"customer_id":"c","text":"'
        for _ in range(4):
            yield b"x" * 400
        yield b'"}'

    with small_client() as client:
        response = client.post(URL, content=body(), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_body_under_the_limit_is_not_413() -> None:
    with small_client() as client:
        response = client.post(URL, json={"customer_id": "c", "text": "x" * 900})

    assert response.status_code == 503


def test_valid_body_before_the_bus_is_bound_is_503(client: TestClient, api: IngestAPI) -> None:
    assert api.bus is None

    response = client.post(URL, json={"customer_id": "c", "text": "hi"})

    assert response.status_code == 503
    assert response.json()["error"] == "starting"


def test_valid_body_is_published_and_accepted(client: TestClient, bus: RecordingBus) -> None:
    response = client.post(
        URL,
        json={"customer_id": "cust-9", "text": "  where is my parcel?  ", "channel": "sms"},
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert body["stream"] == WS_URL
    assert len(bus.published) == 1
    topic, event = bus.published[0]
    assert topic is Topic.TURN_RECEIVED
    assert isinstance(event, TurnReceivedEvent)
    assert event.conversation_id == "conv-1"
    assert event.customer_id == "cust-9"
    assert event.channel is Channel.SMS
    assert event.payload.message.text == "where is my parcel?"
    assert body["event_id"] == str(event.event_id)
    assert body["turn_id"] == str(event.payload.message.turn_id)
    assert body["trace_id"] == event.trace_id


# --- WebSocket ------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?customer_id=", "?customer_id=has%20space"])
def test_socket_with_bad_customer_id_gets_an_error_then_close(
    client: TestClient, query: str
) -> None:
    with client.websocket_connect(WS_URL + query) as ws:
        frame = ws.receive_json()
        assert frame["type"] == "error"
        assert frame["status"] == 400
        assert frame["error"] == "invalid_customer_id"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()

    assert closed.value.code == 4400


def test_socket_with_bad_conversation_id_gets_an_error_then_close(client: TestClient) -> None:
    with client.websocket_connect("/v1/conversations/-bad/ws?customer_id=c") as ws:
        frame = ws.receive_json()
        assert frame["status"] == 400
        assert frame["error"] == "invalid_conversation_id"
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()


def test_invalid_frames_get_errors_and_the_socket_stays_open(
    client: TestClient, api: IngestAPI
) -> None:
    with client.websocket_connect(WS_URL + "?customer_id=c") as ws:
        ws.send_text("this is not json")
        first = ws.receive_json()
        assert first["type"] == "error"
        assert first["status"] == 422
        assert first["error"] == "invalid_request"

        ws.send_text(json.dumps({"type": "message", "text": "   ", "client_message_id": "m1"}))
        second = ws.receive_json()
        assert second["type"] == "error"
        assert second["status"] == 422
        assert "text" in second["message"]

        ws.send_text(json.dumps({"type": "typing", "text": "hi"}))
        third = ws.receive_json()
        assert third["status"] == 422
        assert "type" in third["message"]

        # Still open: a valid frame now reaches the edge (503: no bus bound in this test).
        ws.send_text(json.dumps({"type": "message", "text": "hi", "client_message_id": "m2"}))
        fourth = ws.receive_json()
        assert fourth["status"] == 503
        assert fourth["client_message_id"] == "m2"
        assert api.hub.count() == 1

    assert api.hub.count() == 0


def test_valid_frame_is_accepted_and_published(client: TestClient, bus: RecordingBus) -> None:
    with client.websocket_connect(WS_URL + "?customer_id=cust-1") as ws:
        ws.send_text(json.dumps({"type": "message", "text": "hello", "client_message_id": "m1"}))
        frame = ws.receive_json()

    assert frame["type"] == "accepted"
    assert frame["client_message_id"] == "m1"
    assert frame["duplicate"] is False
    assert len(bus.published) == 1
    event = bus.published[0][1]
    assert isinstance(event, TurnReceivedEvent)
    assert event.channel is Channel.WEB
    assert event.customer_id == "cust-1"
    assert frame["turn_id"] == str(event.payload.message.turn_id)


def test_binary_frame_gets_an_error_frame(client: TestClient) -> None:
    with client.websocket_connect(WS_URL + "?customer_id=c") as ws:
        ws.send_bytes(b'{"type":"message","text":"hi"}')
        frame = ws.receive_json()
        assert frame["type"] == "error"
        assert 400 <= frame["status"] < 500


async def test_hub_drops_deltas_that_arrive_after_their_reply() -> None:
    class Socket:
        def __init__(self) -> None:
            self.frames: list[dict[str, object]] = []

        async def send_json(self, frame: dict[str, object]) -> None:
            self.frames.append(frame)

    hub = ConnectionHub()
    ws = Socket()
    hub.add("conv-1", ws)  # type: ignore[arg-type]
    await hub.send("conv-1", {"type": "delta", "reply_id": "r1", "seq": 0, "text": "Hel"})
    await hub.send("conv-1", {"type": "reply", "reply_id": "r1", "text": "Hello there"})
    late = await hub.send("conv-1", {"type": "delta", "reply_id": "r1", "seq": 1, "text": "lo"})
    await hub.send("conv-1", {"type": "delta", "reply_id": "r2", "seq": 0, "text": "Next"})
    assert late == 0
    assert [(f["type"], f["reply_id"]) for f in ws.frames] == [
        ("delta", "r1"),
        ("reply", "r1"),
        ("delta", "r2"),
    ]
