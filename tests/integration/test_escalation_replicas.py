"""Two escalation replicas: a console on one hears what the other consumed or did.

Both replicas share PostgreSQL and Redis, as in the manifests' two-replica deployment. Replica
B consumes the test's topics; replica A reads another topic prefix, so it never consumes the
event itself: whatever its console shows came through the shared fanout.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from services.escalation.app import create_app
from services.escalation.settings import EscalationSettings
from shared.events import Envelope, Signal
from shared.settings import KafkaSettings, PostgresSettings, RedisSettings
from shared.topics import Topic
from tests.kit import (
    analyzed,
    assist_suggested,
    contextualized,
    serving,
    turn_received,
)

pytestmark = pytest.mark.integration


def replica(stack_env: dict[str, str], dsn: str, topic_prefix: str, redis_prefix: str) -> Any:
    return create_app(
        EscalationSettings(
            kafka=KafkaSettings(
                bootstrap_servers=stack_env["CBD_KAFKA_BOOTSTRAP_SERVERS"],
                topic_prefix=topic_prefix,
                partitions=1,
            ),
            postgres=PostgresSettings(dsn=SecretStr(dsn)),
            redis=RedisSettings(url=SecretStr(stack_env["CBD_REDIS_URL"]), key_prefix=redis_prefix),
        )
    )


@asynccontextmanager
async def console(base_url: str) -> AsyncIterator[Any]:
    async with httpx.AsyncClient(base_url=base_url) as http:
        login = await http.post("/v1/agent/login", json={"agent_id": "agent", "password": "agent"})
        assert login.status_code == 200, login.text
        token = login.json()["token"]
    ws_url = base_url.replace("http://", "ws://") + f"/v1/agent/ws?token={token}"
    async with websockets.connect(ws_url) as ws:
        yield ws


async def next_frame(ws: Any, kind: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The next frame of type `kind` the console gets."""
    async with asyncio.timeout(timeout_s):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame.get("type") == kind:
                return frame


async def publish(bootstrap: str, topic: str, event: Envelope) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, event.model_dump_json().encode(), key=event.conversation_id.encode()
        )
    finally:
        await producer.stop()


async def test_a_console_on_replica_a_gets_an_event_consumed_by_replica_b(
    stack_env: dict[str, str], fresh_db: str
) -> None:
    tag = secrets.token_hex(4)
    redis_prefix = f"it-{tag}:"
    consuming = f"it-{tag}-b."
    app_a = replica(stack_env, fresh_db, f"it-{tag}-a.", redis_prefix)
    app_b = replica(stack_env, fresh_db, consuming, redis_prefix)
    async with (
        serving(app_a, app_b) as (url_a, url_b),
        console(url_a) as console_a,
        console(url_b) as console_b,
    ):
        event = assist_suggested(turn_received(), ["Let me look into that for you."])
        await publish(
            stack_env["CBD_KAFKA_BOOTSTRAP_SERVERS"],
            f"{consuming}{Topic.ASSIST_SUGGESTED.value}",
            event,
        )
        for ws in (console_a, console_b):
            frame = await next_frame(ws, "assist")
            assert frame["conversation_id"] == event.conversation_id
            assert frame["suggestions"] == ["Let me look into that for you."]

        # A turn that asks for a person: B opens the ticket, A's console hears of it...
        turn = contextualized(
            analyzed(
                turn_received("Let me talk to a real person please"),
                signals=[Signal(name="human_request", evidence="a real person")],
            )
        )
        await publish(
            stack_env["CBD_KAFKA_BOOTSTRAP_SERVERS"],
            f"{consuming}{Topic.TURN_CONTEXTUALIZED.value}",
            turn,
        )
        message = await next_frame(console_a, "message")
        assert message["conversation_id"] == turn.conversation_id
        await next_frame(console_a, "queue_changed")

        # ...and an agent's move taken on B reaches A's console as well.
        async with httpx.AsyncClient(base_url=url_b) as http:
            login = await http.post(
                "/v1/agent/login", json={"agent_id": "agent", "password": "agent"}
            )
            headers = {"authorization": f"Bearer {login.json()['token']}"}
            queue = (await http.get("/v1/agent/queue", headers=headers)).json()["tickets"]
            ticket = next(t for t in queue if t["conversation_id"] == turn.conversation_id)
            claimed = await http.post(
                f"/v1/agent/tickets/{ticket['ticket_id']}/claim", headers=headers
            )
            assert claimed.status_code == 200, claimed.text
        await next_frame(console_a, "queue_changed")
