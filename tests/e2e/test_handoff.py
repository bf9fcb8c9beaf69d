"""Handing a conversation to a person: queue, silence of the bot, agent replies, hand-back."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from cbd.runtime import Platform
from tests.kit import REPLY_WAIT_S, eventually

pytestmark = pytest.mark.e2e


def ids() -> tuple[str, str]:
    return f"conv-{secrets.token_hex(6)}", f"cust-{secrets.token_hex(4)}"


def ws_url(platform: Platform, conversation_id: str, customer_id: str) -> str:
    base = platform.url("ingest").replace("http://", "ws://")
    return f"{base}/v1/conversations/{conversation_id}/ws?customer_id={customer_id}"


async def next_reply(ws: Any, timeout_s: float = REPLY_WAIT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        frame: dict[str, Any] = json.loads(raw)
        if frame["type"] == "reply":
            return frame


async def agent_client(platform: Platform, agent_id: str = "agent") -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=platform.url("escalation"), timeout=20)
    resp = await client.post("/v1/agent/login", json={"agent_id": agent_id, "password": "agent"})
    assert resp.status_code == 200, resp.text
    client.headers["Authorization"] = f"Bearer {resp.json()['token']}"
    return client


async def ticket_for(agent: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    async def mine() -> dict[str, Any] | None:
        tickets = (await agent.get("/v1/agent/queue")).json()["tickets"]
        found: list[dict[str, Any]] = [
            t for t in tickets if t["conversation_id"] == conversation_id
        ]
        return found[0] if found else None

    return await eventually(mine, timeout_s=10, what=f"a ticket for {conversation_id}")


async def count(dsn: str, query: str, *args: Any) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(query, *args))
    finally:
        await conn.close()


async def every_routed(dsn: str, query: str, conversation_id: str, expect: int) -> bool:
    return await count(dsn, query, conversation_id) >= expect


async def test_agents_must_sign_in(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=platform.url("escalation")) as http:
        assert (await http.get("/v1/agent/queue")).status_code == 401
        bad = await http.post("/v1/agent/login", json={"agent_id": "agent", "password": "nope"})
        assert bad.status_code == 401
        forged = await http.get(
            "/v1/agent/queue", headers={"Authorization": "Bearer YWdlbnR8OTk5OTk5OTk5OQ.x"}
        )
        assert forged.status_code == 401
        page = await http.get("/console")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]


async def test_handoff_silences_the_bot_until_the_agent_hands_back(platform: Platform) -> None:
    dsn = platform.stack.env()["CBD_PG_DSN"]
    conversation_id, customer_id = ids()
    agent = await agent_client(platform)
    try:
        async with websockets.connect(ws_url(platform, conversation_id, customer_id)) as ws:
            await ws.send(json.dumps({"type": "message", "text": "I want to speak to a person."}))
            notice = await next_reply(ws)
            assert notice["author"] == "system"
            assert "handoff" in notice["flags"]
            assert "wait is about" in notice["text"]

            ticket = await ticket_for(agent, conversation_id)
            assert ticket["status"] == "queued"
            assert ticket["reasons"][0]["code"] == "explicit_request"

            claimed = await agent.post(f"/v1/agent/tickets/{ticket['ticket_id']}/claim")
            assert claimed.status_code == 200
            assert claimed.json()["claimed_by"] == "agent"
            # 50 messages at once while the agent owns the conversation: not one bot reply.
            async with httpx.AsyncClient(base_url=platform.url("ingest")) as http:
                sent = await asyncio.gather(
                    *(
                        http.post(
                            f"/v1/conversations/{conversation_id}/messages",
                            json={"customer_id": customer_id, "text": f"Hello? message {i}"},
                        )
                        for i in range(50)
                    )
                )
            refused = [(r.status_code, r.text) for r in sent if r.status_code != 202]
            assert refused == [], refused[:3]
            routed_human = (
                "SELECT count(*) FROM audit.events WHERE conversation_id = $1 "
                "AND event_type = 'turn.routed' "
                "AND payload->'payload'->'route'->>'target' = 'human'"
            )
            await eventually(
                lambda: every_routed(dsn, routed_human, conversation_id, 51),
                timeout_s=90,
                interval_s=0.5,
                what="every message routed to the person",
            )
            bot_replies = await count(
                dsn,
                "SELECT count(*) FROM audit.events WHERE conversation_id = $1 "
                "AND event_type = 'reply.generated' AND payload->'payload'->>'author' = 'bot'",
                conversation_id,
            )
            assert bot_replies == 0

            packet = (await agent.get(f"/v1/agent/tickets/{ticket['ticket_id']}")).json()["packet"]
            assert packet["intent"] == "I want to speak to a person."
            assert any(t["role"] == "customer" for t in packet["transcript"])

            answer = await agent.post(
                f"/v1/agent/tickets/{ticket['ticket_id']}/reply",
                json={"text": "Hi, I'm Dana from the support team. How can I help?"},
            )
            assert answer.status_code == 202
            from_agent = await next_reply(ws)
            while from_agent["author"] != "agent":
                from_agent = await next_reply(ws)
            assert from_agent["text"] == "Hi, I'm Dana from the support team. How can I help?"

            back = await agent.post(f"/v1/agent/tickets/{ticket['ticket_id']}/handback")
            assert back.status_code == 200
            await ws.send(json.dumps({"type": "message", "text": "Thanks. One more question."}))
            after = await next_reply(ws)
            assert after["author"] == "bot"
    finally:
        await agent.aclose()


async def test_two_agents_cannot_claim_the_same_ticket(platform: Platform) -> None:
    conversation_id, customer_id = ids()
    agent = await agent_client(platform)
    try:
        async with httpx.AsyncClient(base_url=platform.url("ingest")) as http:
            await http.post(
                f"/v1/conversations/{conversation_id}/messages",
                json={"customer_id": customer_id, "text": "Get me a human agent please"},
            )
        ticket = await ticket_for(agent, conversation_id)
        first, second = await asyncio.gather(
            agent.post(f"/v1/agent/tickets/{ticket['ticket_id']}/claim"),
            agent.post(f"/v1/agent/tickets/{ticket['ticket_id']}/claim"),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409]
        resolved = await agent.post(f"/v1/agent/tickets/{ticket['ticket_id']}/resolve")
        assert resolved.json()["status"] == "resolved"
    finally:
        await agent.aclose()
