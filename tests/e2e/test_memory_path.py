"""Memory end to end: remembered across channels, exported, and erased everywhere."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from cbd.runtime import Platform
from services.memory.settings import DEV_ADMIN_TOKEN
from tests.e2e.test_handoff import agent_client, ticket_for
from tests.e2e.test_turn_path import wait_for_rows
from tests.kit import REPLY_WAIT_S

pytestmark = pytest.mark.e2e

ADMIN = {"authorization": f"Bearer {DEV_ADMIN_TOKEN}"}


async def audited(
    dsn: str, conversation_id: str, event_type: str = "turn.contextualized", timeout_s: float = 60.0
) -> dict[str, Any]:
    """The latest event of this type that audit recorded for the conversation."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            body = await conn.fetchval(
                "SELECT body FROM audit.events WHERE conversation_id = $1 "
                "AND event_type = $2 ORDER BY seq DESC LIMIT 1",
                conversation_id,
                event_type,
            )
            if body is not None:
                event: dict[str, Any] = json.loads(bytes(body))
                return event
            assert time.monotonic() < deadline, f"no {event_type} for {conversation_id}"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def post(
    http: httpx.AsyncClient, conversation_id: str, customer_id: str, text: str, channel: str
) -> str:
    """Send a customer message through ingest; return its turn id."""
    resp = await http.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"customer_id": customer_id, "text": text, "channel": channel},
    )
    assert resp.status_code == 202, resp.text
    turn_id: str = resp.json()["turn_id"]
    return turn_id


async def leftovers(dsn: str, redis_url: str, needles: list[str]) -> list[str]:
    """Every table row and Redis key or value that still mentions one of the needles."""
    found: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            for needle in needles:
                # Row text covers every column: text, jsonb, and bytea shown as hex.
                hits = await conn.fetchval(
                    f"SELECT count(*) FROM {name} x WHERE x::text LIKE '%' || $1 || '%' "  # noqa: S608
                    "OR x::text LIKE '%' || encode(convert_to($1, 'UTF8'), 'hex') || '%'",
                    needle,
                )
                if hits:
                    found.append(f"{name}: {hits} rows mention {needle!r}")
    finally:
        await conn.close()
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        async for key in client.scan_iter(count=1000):
            kind = await client.type(key)
            if kind == "string":
                value = str(await client.get(key))
            elif kind == "list":
                value = json.dumps(await client.lrange(key, 0, -1))
            elif kind == "hash":
                value = json.dumps(await client.hgetall(key))
            elif kind == "set":
                value = json.dumps(sorted(await client.smembers(key)))
            else:
                value = ""
            found += [f"redis {key}" for n in needles if n in key or n in value]
    finally:
        await client.aclose()
    return found


async def test_a_preference_follows_the_customer_to_another_channel_then_is_erased(
    platform: Platform,
) -> None:
    env = platform.stack.env()
    dsn, redis_url = env["CBD_PG_DSN"], env["CBD_REDIS_URL"]
    tag = secrets.token_hex(4)
    customer = f"sam-{tag}"
    phone = f"phone:4477009{int(tag, 16) % 100000:05d}"
    web_conversation, sms_conversation = f"web-{tag}", f"sms-{tag}"
    preference = f"I prefer eco-friendly products, I'm Zed{tag}"

    async with (
        httpx.AsyncClient(base_url=platform.url("ingest"), timeout=10) as ingest,
        httpx.AsyncClient(base_url=platform.url("memory"), timeout=10, headers=ADMIN) as memory,
    ):
        web_turn = await post(ingest, web_conversation, customer, preference, "web")
        first = await audited(dsn, web_conversation)
        assert first["customer_id"] == customer

        # The tenant's CRM knows Sam's phone number: link it, and set a tier.
        resp = await memory.post(f"/v1/customers/{customer}/identities", json={"identity": phone})
        assert resp.status_code == 201, resp.text
        resp = await memory.patch(f"/v1/customers/{customer}", json={"tier": "gold"})
        assert resp.status_code == 200, resp.text
        assert phone in resp.json()["identities"]

        # Over REST as the tenant's server (REST may not claim the SMS channel: only Twilio's
        # signed webhook can), under the phone identity the CRM linked.
        await post(ingest, sms_conversation, phone, "Can you suggest a new water bottle?", "api")
        event = await audited(dsn, sms_conversation)
        context = event["payload"]["context"]
        assert event["customer_id"] == customer, "the phone resolves to the known customer"
        assert event["channel"] == "api"
        texts = [m["text"] for m in context["memories"]]
        assert "Prefers eco-friendly products" in texts, context
        eco = next(m for m in context["memories"] if m["text"] == "Prefers eco-friendly products")
        assert eco["memory_id"] in context["memories_used"]
        assert context["profile"]["tier"] == "gold"
        assert context["customer_tier"] == "gold"
        assert phone in context["profile"]["channels"]
        assert context["emotional_history"], "the web conversation is past history now"

        # A person takes over: the agent sees what the platform remembers, not just this chat.
        await post(ingest, sms_conversation, phone, "Let me talk to a real person please", "api")
        agent = await agent_client(platform)
        try:
            ticket = await ticket_for(agent, sms_conversation)
            packet = (await agent.get(f"/v1/agent/tickets/{ticket['ticket_id']}")).json()["packet"]
        finally:
            await agent.aclose()
        assert "Prefers eco-friendly products" in packet["customer"]["memories"]
        assert packet["customer"]["profile"]["Tier"] == "gold"

        unauthorised = await ingest.get(f"{platform.url('memory')}/v1/customers/{customer}/export")
        assert unauthorised.status_code == 401
        exported = (await memory.get(f"/v1/customers/{customer}/export")).json()
        assert {i["identity"] for i in exported["identities"]} == {customer, phone}
        assert preference in [t["text"] for t in exported["turns"]]
        assert "Prefers eco-friendly products" in [m["text"] for m in exported["memories"]]
        assert {c["conversation_id"] for c in exported["conversations"]} == {
            web_conversation,
            sms_conversation,
        }

        # The web reply lands first, so erasure is tested against what a stored reply wrote.
        # The SMS replies (the bot's answer and the handoff notice) are not waited for: still
        # in flight when the erasure runs, they must be stored erased or dropped wherever
        # they arrive after it (erasure receipts), which the scan below checks.
        rows = await wait_for_rows(
            dsn,
            "SELECT 1 FROM memory.turns WHERE in_reply_to = $1::uuid",
            web_turn,
            expect=1,
            timeout_s=REPLY_WAIT_S,
        )
        assert rows, f"no reply stored for turn {web_turn}"
        resp = await memory.delete(f"/v1/customers/{customer}")
        assert resp.status_code == 200, resp.text
        assert resp.json()["conversations"] == 2

        needles = [customer, phone, web_conversation, sms_conversation, f"Zed{tag}"]
        deadline = time.monotonic() + 45
        while remaining := await leftovers(dsn, redis_url, needles):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        assert remaining == [], remaining
        assert (await memory.get(f"/v1/customers/{customer}/export")).status_code == 404
