"""The ingest frame buffer and WebSocket resume, against the real embedded Redis.

Every frame to a conversation gets an id from a per-conversation Redis stream and is
published in the same script; a socket that reconnects with `after=<id>` is replayed what it
missed, then goes live, and sees every frame exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from services.ingest.app import ROUTERS
from services.ingest.delivery import (
    FRAME_BUFFER_MAXLEN,
    FRAME_BUFFER_TTL_S,
    ConnectionHub,
    Fanout,
    conversation_fanout,
    frame_buffer_key,
    parse_frame_id,
)
from services.ingest.edge import EdgeGuard
from services.ingest.handlers import IngestHandlers
from services.ingest.intake import Intake
from services.ingest.ownership import Owners, Party
from services.ingest.settings import IngestSettings
from shared import http
from shared.events import Channel, CustomerErased, CustomerErasedEvent, utcnow
from shared.kafka import EventBus
from shared.settings import RedisSettings
from shared.topics import Topic
from tests.kit import RecordingBus, reply_generated, turn_received


class Socket:
    """Records what the hub sends, like a WebSocket would carry it."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_json(self, frame: dict[str, Any]) -> None:
        self.frames.append(json.loads(json.dumps(frame)))


def delta(reply_id: str, seq: int, text: str) -> dict[str, Any]:
    return {"type": "delta", "turn_id": "t1", "reply_id": reply_id, "seq": seq, "text": text}


def reply(reply_id: str, text: str) -> dict[str, Any]:
    return {"type": "reply", "turn_id": "t1", "reply_id": reply_id, "author": "bot", "text": text}


@pytest.fixture
def prefix() -> str:
    return f"it-{secrets.token_hex(4)}:"


@pytest.fixture
async def listening(
    redis_client: aioredis.Redis, prefix: str
) -> AsyncIterator[tuple[Fanout, ConnectionHub]]:
    """A fanout whose listener forwards to a hub, as a running ingest replica has."""
    hub = ConnectionHub()
    fanout = conversation_fanout(redis_client, prefix, hub)
    task = asyncio.create_task(fanout.run())
    await fanout.wait_listening()
    yield fanout, hub
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def until(predicate: Any, timeout_s: float = 5.0) -> None:
    """Wait for the listener to have done something (pub/sub is asynchronous)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_frames_get_increasing_ids_and_replay_returns_those_after_an_id(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    fanout = conversation_fanout(redis_client, prefix, ConnectionHub())

    ids = [await fanout.publish("conv-a", delta("r1", i, f"w{i} ")) for i in range(5)]

    keys = [parse_frame_id(str(i)) for i in ids]
    assert keys == sorted(keys)
    assert len(set(keys)) == 5
    after_second = await fanout.replay("conv-a", keys[1])
    assert [f["id"] for f in after_second] == ids[2:]
    assert [f["seq"] for f in after_second] == [2, 3, 4]
    assert [f["id"] for f in await fanout.replay("conv-a", (0, 0))] == ids
    assert await fanout.replay("conv-a", keys[-1]) == []
    assert await fanout.replay("conv-other", (0, 0)) == []
    ttl = await redis_client.ttl(frame_buffer_key(prefix, "conv-a"))
    assert 0 < ttl <= FRAME_BUFFER_TTL_S


async def test_the_buffer_is_bounded_and_keeps_the_newest_frames(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    fanout = conversation_fanout(redis_client, prefix, ConnectionHub())
    ids = [
        await fanout.publish("conv-b", delta("r1", i, "x"))
        for i in range(FRAME_BUFFER_MAXLEN + 300)
    ]

    kept = await redis_client.xlen(frame_buffer_key(prefix, "conv-b"))
    replayed = await fanout.replay("conv-b", (0, 0))

    # MAXLEN ~ trims whole stream nodes: at least the bound, never everything.
    assert FRAME_BUFFER_MAXLEN <= kept < FRAME_BUFFER_MAXLEN + 300
    assert [f["id"] for f in replayed] == ids[-kept:]


async def test_live_frames_carry_the_buffered_id(
    listening: tuple[Fanout, ConnectionHub],
) -> None:
    fanout, hub = listening
    ws = Socket()
    hub.add("conv-c", ws)  # type: ignore[arg-type]

    frame_id = await fanout.publish("conv-c", {"type": "accepted", "turn_id": "t1", "flags": []})
    await until(lambda: ws.frames)

    assert ws.frames == [{"type": "accepted", "turn_id": "t1", "flags": [], "id": frame_id}]


async def test_a_redelivered_reply_event_reaches_the_socket_once(
    listening: tuple[Fanout, ConnectionHub], prefix: str
) -> None:
    # Ingest killed after publishing a reply's frame and before committing the event gets the
    # event again: the customer must not see the reply twice (chaos counted it at the socket).
    fanout, hub = listening
    event = reply_generated(
        turn_received(conversation_id="conv-once"), "Your parcel is on its way."
    )
    ws = Socket()
    hub.add("conv-once", ws)  # type: ignore[arg-type]
    handlers = IngestHandlers(fanout, prefix)

    await handlers.on_reply_generated(event)
    await handlers.on_reply_generated(event)
    await until(lambda: ws.frames)
    await asyncio.sleep(0.3)

    assert [f["reply_id"] for f in ws.frames] == [str(event.payload.reply_id)]
    buffered = await fanout.replay("conv-once", (0, 0))
    assert [f["reply_id"] for f in buffered] == [str(event.payload.reply_id)]
    # Another reply to the same conversation still goes out.
    other = reply_generated(turn_received(conversation_id="conv-once"), "Anything else?")
    await handlers.on_reply_generated(other)
    await until(lambda: len(ws.frames) == 2)


async def test_a_resuming_socket_gets_missed_then_live_frames_each_once_in_order(
    listening: tuple[Fanout, ConnectionHub],
) -> None:
    fanout, hub = listening
    seen = await fanout.publish("conv-d", delta("r1", 0, "Hel"))
    await fanout.publish("conv-d", delta("r1", 1, "lo "))  # missed while disconnected

    ws = Socket()
    hub.add("conv-d", ws, after=parse_frame_id(str(seen)))  # type: ignore[arg-type]
    # Published after the socket joined and before the buffer is read: both replayed and
    # held live, and must still be sent once.
    both = await fanout.publish("conv-d", delta("r1", 2, "there"))
    await asyncio.sleep(0.2)
    assert ws.frames == []  # held until the replay has been sent
    replay = await fanout.replay("conv-d", parse_frame_id(str(seen)))
    assert both in [f["id"] for f in replay]
    sent = await hub.resume("conv-d", ws, replay)  # type: ignore[arg-type]
    await fanout.publish("conv-d", reply("r1", "Hello there"))
    await until(lambda: ws.frames and ws.frames[-1]["type"] == "reply")

    assert sent == 2
    assert [(f["type"], f.get("seq")) for f in ws.frames] == [
        ("delta", 1),
        ("delta", 2),
        ("resumed", None),
        ("reply", None),
    ]
    assert ws.frames[2]["replayed"] == 2
    assert ws.frames[2]["complete"] is True
    assert ws.frames[2]["last_id"] == both
    ids = [parse_frame_id(f["id"]) for f in ws.frames if "id" in f]
    assert ids == sorted(set(ids))


async def test_replay_sends_a_finished_reply_without_its_deltas_or_late_slices(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    fanout = conversation_fanout(redis_client, prefix, ConnectionHub())
    hub = ConnectionHub()
    await fanout.publish("conv-e", delta("r1", 0, "Hi"))
    await fanout.publish("conv-e", reply("r1", "Hi, how can I help?"))
    await fanout.publish("conv-e", delta("r1", 1, ", how"))  # a slice that lost the race
    await fanout.publish("conv-e", delta("r2", 0, "Also"))

    ws = Socket()
    hub.add("conv-e", ws, after=(0, 0))  # type: ignore[arg-type]
    await hub.resume("conv-e", ws, await fanout.replay("conv-e", (0, 0)))  # type: ignore[arg-type]

    assert [(f["type"], f["reply_id"]) for f in ws.frames[:-1]] == [
        ("reply", "r1"),
        ("delta", "r2"),
    ]
    assert ws.frames[-1]["type"] == "resumed"
    # A live straggler of the finished reply is dropped too.
    assert await hub.send("conv-e", delta("r1", 2, " can")) == 0


async def test_replay_leaves_out_a_withdrawn_reply_entirely(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    # A person took over while the bot was writing: a page drawn afresh never shows the
    # half reply, nor the withdrawal that took it back.
    fanout = conversation_fanout(redis_client, prefix, ConnectionHub())
    hub = ConnectionHub()
    await fanout.publish("conv-w", delta("r1", 0, "Let me"))
    await fanout.publish("conv-w", delta("r1", 1, "") | {"withdrawn": True})
    await fanout.publish("conv-w", reply("r2", "Hi, I'm Dana from the team."))

    ws = Socket()
    hub.add("conv-w", ws, after=(0, 0))  # type: ignore[arg-type]
    await hub.resume("conv-w", ws, await fanout.replay("conv-w", (0, 0)))  # type: ignore[arg-type]

    assert [(f["type"], f["reply_id"]) for f in ws.frames[:-1]] == [("reply", "r2")]


async def test_frames_published_while_the_listener_lost_redis_reach_connected_sockets(
    stack_env: dict[str, str], prefix: str
) -> None:
    name = prefix.rstrip(":")
    redis = aioredis.from_url(stack_env["CBD_REDIS_URL"], decode_responses=True, client_name=name)
    hub = ConnectionHub()
    fanout = conversation_fanout(redis, prefix, hub)
    task = asyncio.create_task(fanout.run())
    try:
        await fanout.wait_listening()
        ws = Socket()
        hub.add("conv-g", ws)  # type: ignore[arg-type]
        await fanout.publish("conv-g", delta("r1", 0, "One "))
        await until(lambda: len(ws.frames) == 1)

        # Cut this listener's subscription (only ours: other tests may share the server).
        listeners = [c for c in await redis.client_list(_type="pubsub") if c["name"] == name]
        assert len(listeners) == 1
        await redis.client_kill_filter(_id=listeners[0]["id"])
        # The listener waits a second before resubscribing: these go out to nobody live.
        await fanout.publish("conv-g", delta("r1", 1, "two "))
        await fanout.publish("conv-g", delta("r1", 2, "three"))
        await until(lambda: len(ws.frames) >= 3)
        await fanout.publish("conv-g", reply("r1", "One two three"))
        await until(lambda: ws.frames[-1]["type"] == "reply")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()

    assert [(f["type"], f.get("seq")) for f in ws.frames] == [
        ("delta", 0),
        ("delta", 1),
        ("delta", 2),
        ("reply", None),
    ]


async def test_erasing_the_customer_deletes_the_conversation_buffer(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    fanout = conversation_fanout(redis_client, prefix, ConnectionHub())
    await fanout.publish("conv-f", {"type": "accepted", "text": "my address is ..."})
    await fanout.publish("conv-keep", {"type": "accepted", "text": "someone else"})
    owners = Owners(redis_client, prefix, 3600)
    await owners.claim("conv-f", Party("default", "cust-f"))
    event = CustomerErasedEvent.create(
        conversation_id="conv-f",
        customer_id="cust-f",
        channel=Channel.API,
        payload=CustomerErased(
            erased_customer_id="cust-f",
            conversation_ids=["conv-f"],
            requested_by="test",
            requested_at=utcnow(),
        ),
    )

    await IngestHandlers(fanout, prefix).on_customer_erased(event)

    assert await redis_client.exists(frame_buffer_key(prefix, "conv-f")) == 0
    assert await redis_client.exists(frame_buffer_key(prefix, "conv-keep")) == 1
    # The conversation is nobody's now: its id no longer leads to the erased customer.
    assert await redis_client.exists(f"{prefix}conv-owner:conv-f") == 0


# --- the WebSocket itself, wired to real Redis ------------------------------------------------


@dataclass
class Wired:
    """The edge's parts a test reaches into."""

    fanout: Fanout
    bus: RecordingBus


@pytest.fixture
def wired(stack_env: dict[str, str], prefix: str) -> Iterator[tuple[TestClient, Wired]]:
    """The edge's routers with the real frame buffer, listener and owners, a recording bus."""
    settings = IngestSettings(redis=RedisSettings(key_prefix=prefix))
    hub = ConnectionHub()
    bus = RecordingBus()
    parts: list[Wired] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = aioredis.from_url(stack_env["CBD_REDIS_URL"], decode_responses=True)
        fanout = conversation_fanout(redis, prefix, hub)
        task = asyncio.create_task(fanout.run())
        await fanout.wait_listening()
        guard = EdgeGuard(settings, redis)
        owners = Owners(redis, prefix, settings.owner_ttl_s)
        intake = Intake(settings, cast(EventBus, bus), redis, guard, owners)
        for collaborator in (settings, hub, fanout, guard, intake):
            http.provide(app, collaborator)
        parts.append(Wired(fanout, bus))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()

    app = FastAPI(lifespan=lifespan)
    http.install(app, max_body_bytes=settings.max_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    with TestClient(app) as client:
        yield client, parts[0]


def test_socket_resumes_after_a_drop_without_losing_or_repeating_frames(
    wired: tuple[TestClient, Wired],
) -> None:
    client, api = wired
    assert client.portal is not None
    url = "/v1/conversations/conv-ws/ws?customer_id=web-1"
    message = {"type": "message", "text": "Where is my parcel?", "client_message_id": "m1"}

    with client.websocket_connect(url + "&after=0") as ws:
        assert ws.receive_json()["type"] == "resumed"
        ws.send_text(json.dumps(message))
        accepted = ws.receive_json()
        assert accepted["type"] == "accepted"
        assert accepted["text"] == "Where is my parcel?"
    last_seen = accepted["id"]

    # While the socket is gone, the reply streams and finishes.
    for frame in (
        delta("r1", 0, "It is "),
        delta("r1", 1, "on its way."),
        reply("r1", "It is on its way."),
    ):
        client.portal.call(api.fanout.publish, "conv-ws", frame)

    with client.websocket_connect(url + f"&after={last_seen}") as ws:
        replayed = ws.receive_json()
        resumed = ws.receive_json()
        # A client that missed the acknowledgement resends; the edge answers the same turn.
        ws.send_text(json.dumps(message))
        again = ws.receive_json()
        client.portal.call(api.fanout.publish, "conv-ws", delta("r2", 0, "Anything else?"))
        live = ws.receive_json()

    assert replayed["type"] == "reply"
    assert replayed["text"] == "It is on its way."
    assert resumed == {
        "type": "resumed",
        "replayed": 1,
        "last_id": resumed["last_id"],
        "complete": True,
    }
    assert parse_frame_id(resumed["last_id"]) > parse_frame_id(last_seen)
    assert again["type"] == "accepted"
    assert again["duplicate"] is True
    assert again["turn_id"] == accepted["turn_id"]
    assert live["type"] == "delta"
    assert live["reply_id"] == "r2"
    assert len(api.bus.published) == 1  # one turn, though the message was sent twice


def test_rating_over_the_socket_is_published_once_even_if_resent(
    wired: tuple[TestClient, Wired],
) -> None:
    client, api = wired
    url = "/v1/conversations/conv-rt/ws?customer_id=web-2"
    rating = {"type": "rating", "rating": 4, "comment": "Kind", "client_message_id": "rt-1"}

    with client.websocket_connect(url) as ws:
        ws.send_text(json.dumps(rating))
        first = ws.receive_json()
    with client.websocket_connect(url) as ws:
        ws.send_text(json.dumps(rating))
        second = ws.receive_json()

    assert first["type"] == second["type"] == "rating_accepted"
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert first["event_id"] == second["event_id"]
    assert [t for t, _, _ in api.bus.published] == [Topic.FEEDBACK_RECEIVED]


def test_another_customer_never_sees_the_conversation_on_a_real_buffer(
    wired: tuple[TestClient, Wired],
) -> None:
    client, api = wired
    assert client.portal is not None
    url = "/v1/conversations/conv-own/ws?customer_id="
    with client.websocket_connect(url + "web-sam&after=0") as ws:
        assert ws.receive_json()["type"] == "resumed"
        ws.send_text(json.dumps({"type": "message", "text": "card 4111-1111-1111-1111"}))
        accepted = ws.receive_json()
    client.portal.call(api.fanout.publish, "conv-own", reply("r1", "Thanks, Sam."))

    # The public widget key is all an intruder needs to try; the answer is a closed door.
    with client.websocket_connect(url + "web-mallory&after=0") as ws:
        refusal = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    with client.websocket_connect(url + "web-sam&after=0") as ws:
        replayed = [ws.receive_json(), ws.receive_json()]

    assert accepted["text"] == "card [card ending 1111]"
    assert (refusal["status"], refusal["error"], closed.value.code) == (
        404,
        "conversation_not_found",
        4404,
    )
    assert [f["type"] for f in replayed] == ["accepted", "reply"]
    assert "4111" not in json.dumps(replayed).replace("ending 1111", "")
