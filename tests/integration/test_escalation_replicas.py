"""Two escalation replicas: a console on one hears what the other consumed or did.

Both replicas share PostgreSQL and Redis, as in the manifests' two-replica deployment. Replica
B consumes the test's topics; replica A reads another topic prefix, so it never consumes the
event itself: whatever its console shows came through the shared fanout.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets
from pydantic import SecretStr

from services.escalation.app import create_app
from services.escalation.settings import EscalationSettings
from shared.events import Signal
from shared.settings import KafkaSettings, PostgresSettings, RedisSettings
from shared.topics import Topic
from tests.kit import (
    analyzed,
    assist_suggested,
    contextualized,
    produce,
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
        await produce(
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
        await produce(
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

            # The rest of an agent's moves, and the desk's refusals in the one error shape.
            ticket_url = f"/v1/agent/tickets/{ticket['ticket_id']}"
            reply = await http.post(f"{ticket_url}/reply", headers=headers, json={"text": "Hi"})
            assert reply.status_code == 202, reply.text
            empty = await http.post(f"{ticket_url}/reply", headers=headers, json={"text": " "})
            assert (empty.status_code, empty.json()["error"]) == (422, "invalid_request")
            stranger = await http.post(
                f"{ticket_url}/transfer", headers=headers, json={"to_agent": "nobody"}
            )
            assert (stranger.status_code, stranger.json()["error"]) == (400, "unknown_agent")
            resolved = await http.post(f"{ticket_url}/resolve", headers=headers)
            assert resolved.json()["status"] == "resolved"
            await next_frame(console_a, "queue_changed")
            again = await http.post(f"{ticket_url}/claim", headers=headers)
            assert (again.status_code, again.json()["error"]) == (409, "conflict")
            unknown = await http.get(f"/v1/agent/tickets/{uuid.uuid4()}", headers=headers)
            assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")


async def test_signing_out_everywhere_on_one_replica_closes_the_console_on_the_other(
    stack_env: dict[str, str], fresh_db: str
) -> None:
    tag = secrets.token_hex(4)
    app_a = replica(stack_env, fresh_db, f"it-{tag}-a.", f"it-{tag}:")
    app_b = replica(stack_env, fresh_db, f"it-{tag}-b.", f"it-{tag}:")
    async with serving(app_a, app_b) as (url_a, url_b), console(url_a) as open_console:
        async with httpx.AsyncClient(base_url=url_b) as http:
            login = await http.post(
                "/v1/agent/login", json={"agent_id": "agent", "password": "agent"}
            )
            headers = {"Authorization": f"Bearer {login.json()['token']}"}
            out = await http.post("/v1/agent/sign-out-everywhere", headers=headers)
            assert out.status_code == 200, out.text
            assert out.json()["agent_id"] == "agent"
            # The token that signed out is void too.
            again = await http.get("/v1/agent/queue", headers=headers)
            assert again.status_code == 401
        # The console opened on replica A before the sign-out is told and closed, within
        # A's refresh of token versions plus one re-check (2 s each by default).
        frame = await next_frame(open_console, "error", timeout_s=15)
        assert frame["error"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                await open_console.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
