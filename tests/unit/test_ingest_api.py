"""Unit tests for the ingest edge's HTTP and WebSocket validation (no broker, no Redis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from services.ingest.app import create_app
from services.ingest.delivery import ConnectionHub
from services.ingest.settings import IngestSettings
from shared import http
from shared.events import MAX_MESSAGE_CHARS, Channel, TurnReceivedEvent
from shared.topics import Topic
from tests.kit import RecordingBus
from tests.unit.conftest import started

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


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"text": "hi"', b"\xff\xfe\x00", b"[" * 5000])
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    response = client.post(URL, content=raw, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"] in ("malformed_json", "too_deep")


def test_deeply_nested_json_is_refused_before_parsing(client: TestClient) -> None:
    nested = '{"customer_id": "c", "text": "hi", "x": ' + "[" * 100 + "]" * 100 + "}"

    response = client.post(URL, content=nested, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"] == "too_deep"


@pytest.mark.parametrize("text", ["hi\u0000there", "bell\u0007", "esc\u001b[31m", "c1\u0085c"])
def test_control_characters_are_refused_naming_text(
    client: TestClient, bus: RecordingBus, text: str
) -> None:
    response = client.post(URL, json={"customer_id": "c", "text": text})

    assert response.status_code == 422
    assert fields_of(response.json()) == ["text"]
    assert bus.published == []


def test_new_lines_and_tabs_are_kept(client: TestClient, bus: RecordingBus) -> None:
    response = client.post(URL, json={"customer_id": "c", "text": "line one\r\n\tline two"})

    assert response.status_code == 202
    event = bus.published[0][1]
    assert isinstance(event, TurnReceivedEvent)
    assert event.payload.message.text == "line one\n\tline two"


@pytest.mark.parametrize("channel", ["sms", "whatsapp", "voice"])
def test_rest_cannot_claim_a_provider_channel(
    client: TestClient, bus: RecordingBus, channel: str
) -> None:
    response = client.post(URL, json={"customer_id": "c", "text": "hi", "channel": channel})

    assert response.status_code == 422
    assert fields_of(response.json()) == ["channel"]
    assert "webhook" in response.json()["message"]
    assert bus.published == []


def test_card_numbers_are_replaced_before_publishing(
    client: TestClient, bus: RecordingBus, fake_redis: Any
) -> None:
    text = "card 4111.1111.1111.1111, security code is 737"

    response = client.post(URL, json={"customer_id": "c", "text": text, "client_message_id": "m1"})

    assert response.status_code == 202
    event = bus.published[0][1]
    assert isinstance(event, TurnReceivedEvent)
    assert event.payload.message.text == "card [card ending 1111], security code is [security code]"


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
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    return TestClient(started(IngestSettings(max_body_bytes=1024), RecordingBus(), redis))


def test_body_over_the_limit_is_413() -> None:
    response = small_client().post(URL, json={"customer_id": "c", "text": "x" * 2000})

    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_chunked_body_over_the_limit_is_413() -> None:
    def body() -> Iterator[bytes]:
        yield b'{"customer_id":"c","text":"'
        for _ in range(4):
            yield b"x" * 400
        yield b'"}'

    client = small_client()
    response = client.post(URL, content=body(), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_body_under_the_limit_is_not_413() -> None:
    response = small_client().post(URL, json={"customer_id": "c", "text": "x" * 900})

    assert response.status_code == 202


def test_valid_body_before_the_service_has_started_is_503() -> None:
    client = TestClient(create_app(IngestSettings()))

    response = client.post(URL, json={"customer_id": "c", "text": "hi"})

    assert response.status_code == 503
    assert response.json()["error"] == "starting"


def test_valid_body_is_published_and_accepted(client: TestClient, bus: RecordingBus) -> None:
    response = client.post(
        URL,
        json={"customer_id": "cust-9", "text": "  where is my parcel?  ", "channel": "email"},
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert body["stream"] == WS_URL
    assert len(bus.published) == 1
    topic, event, _ = bus.published[0]
    assert topic is Topic.TURN_RECEIVED
    assert isinstance(event, TurnReceivedEvent)
    assert event.conversation_id == "conv-1"
    assert event.customer_id == "cust-9"
    assert event.channel is Channel.EMAIL
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
    client: TestClient, app: Any, bus: RecordingBus
) -> None:
    hub = http.provided(app, ConnectionHub)
    assert hub is not None
    with client.websocket_connect(WS_URL + "?customer_id=c") as ws:
        ws.send_text("this is not json")
        first = ws.receive_json()
        assert first["type"] == "error"
        assert first["status"] == 400
        assert first["error"] == "malformed_json"

        ws.send_text(json.dumps({"type": "message", "text": "   ", "client_message_id": "m1"}))
        second = ws.receive_json()
        assert second["type"] == "error"
        assert second["status"] == 422
        assert "text" in second["message"]

        ws.send_text(json.dumps({"type": "typing", "text": "hi"}))
        third = ws.receive_json()
        assert third["status"] == 422
        assert "type" in third["message"]

        ws.send_text("[" * 20 + "]" * 20)
        assert ws.receive_json()["error"] == "too_deep"

        ws.send_text(json.dumps({"type": "message", "text": "x" * 17_000}))
        assert ws.receive_json()["error"] == "frame_too_large"

        ws.send_text(json.dumps({"type": "message", "text": "a\u0000b", "client_message_id": "m3"}))
        control = ws.receive_json()
        assert (control["status"], control["client_message_id"]) == (422, "m3")

        # Still open: a valid frame now goes through.
        ws.send_text(json.dumps({"type": "message", "text": "hi", "client_message_id": "m2"}))
        fourth = ws.receive_json()
        assert fourth["type"] == "accepted"
        assert fourth["client_message_id"] == "m2"
        assert hub.count() == 1

    assert hub.count() == 0
    assert len(bus.published) == 1


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


class Socket:
    """Records the frames a hub sends it."""

    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []

    async def send_json(self, frame: dict[str, object]) -> None:
        self.frames.append(frame)


async def test_hub_drops_deltas_that_arrive_after_their_reply() -> None:
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


async def test_hub_sends_a_withdrawal_then_drops_the_rest_of_that_reply() -> None:
    hub = ConnectionHub()
    ws = Socket()
    hub.add("conv-1", ws)  # type: ignore[arg-type]
    await hub.send("conv-1", {"type": "delta", "reply_id": "r1", "seq": 0, "text": "Let me"})
    withdrawal = {"type": "delta", "reply_id": "r1", "seq": 1, "text": "", "withdrawn": True}
    assert await hub.send("conv-1", withdrawal) == 1
    assert await hub.send("conv-1", {"type": "delta", "reply_id": "r1", "seq": 2, "text": "x"}) == 0
    assert [f["seq"] for f in ws.frames] == [0, 1]


# --- ownership, as a second customer would try it ---------------------------------------------


def test_a_second_customer_cannot_post_into_someone_elses_conversation(
    client: TestClient, bus: RecordingBus
) -> None:
    first = client.post(URL, json={"customer_id": "sam", "text": "my order is late"})
    intruder = client.post(URL, json={"customer_id": "mallory", "text": "I am Sam"})
    unknown = client.post(
        "/v1/conversations/conv-nobody/feedback", json={"customer_id": "mallory", "rating": 1}
    )
    foreign = client.post(
        "/v1/conversations/conv-1/feedback", json={"customer_id": "mallory", "rating": 1}
    )

    assert first.status_code == 202
    assert intruder.status_code == 404
    # Unknown and foreign conversations get exactly the same answer.
    assert unknown.status_code == foreign.status_code == 404
    assert unknown.json() == foreign.json() == intruder.json()
    assert [e.customer_id for _, e, _ in bus.published] == ["sam"]


def test_a_second_customer_cannot_open_or_resume_the_socket(client: TestClient) -> None:
    with client.websocket_connect(WS_URL + "?customer_id=sam") as ws:
        ws.send_text(json.dumps({"type": "message", "text": "card 4111 1111 1111 1111"}))
        assert ws.receive_json()["type"] == "accepted"

    for query in ("?customer_id=mallory", "?customer_id=mallory&after=0"):
        with client.websocket_connect(WS_URL + query) as ws:
            refusal = ws.receive_json()
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert refusal["status"] == 404
        assert refusal["error"] == "conversation_not_found"
        assert closed.value.code == 4404


def test_a_customer_of_another_tenant_with_the_same_id_is_someone_else() -> None:
    settings = IngestSettings(api_keys={"acme": "key-acme", "globex": "key-globex"})
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    bus = RecordingBus()
    client = TestClient(started(settings, bus, redis))
    body = {"customer_id": "user-1", "text": "hello"}

    acme = client.post(URL, json=body, headers={"x-api-key": "key-acme"})
    globex = client.post(URL, json=body, headers={"x-api-key": "key-globex"})
    own = client.post(
        "/v1/conversations/conv-2/messages", json=body, headers={"x-api-key": "key-globex"}
    )

    assert acme.status_code == 202
    assert globex.status_code == 404
    assert own.status_code == 202
    # Each turn says whose customer "user-1" is, so nothing downstream can mix them up.
    assert [(e.tenant, e.customer_id) for _, e, _ in bus.published] == [
        ("acme", "user-1"),
        ("globex", "user-1"),
    ]


def test_feedback_is_rate_limited_too() -> None:
    settings = IngestSettings(customer_rate_per_min=3)
    client = TestClient(
        started(settings, RecordingBus(), fakeredis.FakeAsyncRedis(decode_responses=True))
    )
    assert client.post(URL, json={"customer_id": "sam", "text": "hi"}).status_code == 202
    statuses = [
        client.post(
            "/v1/conversations/conv-1/feedback", json={"customer_id": "sam", "rating": 5}
        ).status_code
        for _ in range(4)
    ]

    assert statuses[:2] == [202, 202]
    assert statuses[2:] == [429, 429]


def test_made_up_customer_ids_do_not_escape_the_address_limit() -> None:
    settings = IngestSettings(ip_rate_per_min=5)
    client = TestClient(
        started(settings, RecordingBus(), fakeredis.FakeAsyncRedis(decode_responses=True))
    )
    responses = [
        client.post(f"/v1/conversations/c-{i}/messages", json={"customer_id": f"u{i}", "text": "x"})
        for i in range(7)
    ]

    assert [r.status_code for r in responses] == [202] * 5 + [429] * 2
    assert responses[-1].headers["retry-after"].isdigit()


def test_a_socket_flooding_frames_is_limited_then_closed() -> None:
    settings = IngestSettings(connection_frames_per_min=3)
    client = TestClient(
        started(settings, RecordingBus(), fakeredis.FakeAsyncRedis(decode_responses=True))
    )
    with client.websocket_connect(WS_URL + "?customer_id=c") as ws:
        answers = []
        for _ in range(6):
            ws.send_text("not json")
            answers.append(ws.receive_json()["status"])
        ws.send_text("not json")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()

    assert answers == [400, 400, 400, 429, 429, 429]
    assert closed.value.code == 1008
