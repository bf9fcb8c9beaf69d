"""Card data never rests: after customers type card numbers, nothing anywhere holds them.

Three customers type a card number (each with other separators), a security code, an IBAN
and an SSN: one in the web chat (WebSocket), one through a tenant's server (REST), one by SMS
(Twilio's signed webhook). Once their turns and replies are stored, every PostgreSQL table,
every Redis key and value (streams included), every Kafka record on every topic and every
service's log is scanned for the raw values, in the forms they were typed and as bare digits.
The numbers are made up for this run (Luhn- and mod-97-valid), so nothing else can hold them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from aiokafka import AIOKafkaConsumer

from cbd.runtime import Platform
from shared.pii import iban_valid, luhn_valid
from tests.e2e.provider_standin import ProviderStandIn
from tests.e2e.test_channels import new_number, provider, sms, twilio_post, wait_turns

pytestmark = pytest.mark.e2e

__all__ = ["provider"]  # the module-scoped provider stand-in fixture, shared with test_channels


def card_number() -> str:
    """A Visa-shaped 16-digit number that passes the Luhn check, new for every run."""
    body = "4" + "".join(str(secrets.randbelow(10)) for _ in range(14))
    check = next(str(d) for d in range(10) if luhn_valid(body + str(d)))
    return body + check


def iban() -> str:
    """A GB IBAN with valid check digits and a random account, new for every run."""
    bban = "WEST" + "".join(str(secrets.randbelow(10)) for _ in range(14))
    check = next(f"{d:02d}" for d in range(2, 99) if iban_valid(f"GB{d:02d}{bban}"))
    return f"GB{check}{bban}"


def ssn() -> str:
    """A US social security number that follows the rules of issue."""
    area, group = secrets.randbelow(500) + 100, secrets.randbelow(89) + 10
    return f"{area}-{group}-{secrets.randbelow(8999) + 1000}"


def grouped(digits: str, sep: str, size: int = 4) -> str:
    return sep.join(digits[i : i + size] for i in range(0, len(digits), size))


class Secret:
    """One customer's sensitive values, the message that carries them and what to look for."""

    def __init__(self, card_sep: str) -> None:
        self.card = card_number()
        self.cvv = f"{secrets.randbelow(900) + 100}"
        self.iban = iban()
        self.ssn = ssn()
        self.message = (
            f"Please charge my card {grouped(self.card, card_sep)}, the security code is "
            f"{self.cvv}. Refunds to {grouped(self.iban, ' ')}; my SSN is {self.ssn}. "
            # A person takes it: the handoff packet and the agent's ticket are scanned too, and
            # the reply (the handoff notice) does not wait for the LLM on a busy runner.
            "Let me talk to a real person please."
        )
        self.card_sep = card_sep

    def needles(self) -> list[str]:
        return [
            self.card,
            grouped(self.card, self.card_sep),
            f"code is {self.cvv}",
            self.iban,
            grouped(self.iban, " "),
            self.ssn,
            self.ssn.replace("-", ""),
        ]


async def stored_turns(dsn: str, conversation_id: str, timeout_s: float = 120.0) -> list[Any]:
    """The conversation's stored turns, once the customer's and a reply are both there."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT role, text FROM memory.turns WHERE conversation_id = $1", conversation_id
            )
            roles = {r["role"] for r in rows}
            if "customer" in roles and roles & {"bot", "system", "agent"}:
                return list(rows)
            assert time.monotonic() < deadline, f"no stored reply in {conversation_id}: {rows}"
            await asyncio.sleep(0.3)
    finally:
        await conn.close()


async def in_postgres(dsn: str, needles: list[str]) -> list[str]:
    found = []
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
                    found.append(f"postgres {name}: {hits} rows hold {needle!r}")
    finally:
        await conn.close()
    return found


async def in_redis(url: str, needles: list[str]) -> list[str]:
    found = []
    client = aioredis.from_url(url, decode_responses=True)
    try:
        async for key in client.scan_iter(count=1000):
            kind = await client.type(key)
            value: Any = ""
            if kind == "string":
                value = await client.get(key)
            elif kind == "list":
                value = await client.lrange(key, 0, -1)
            elif kind == "hash":
                value = await client.hgetall(key)
            elif kind == "set":
                value = sorted(await client.smembers(key))
            elif kind == "zset":
                value = await client.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = await client.xrange(key)
            text = key + json.dumps(value, ensure_ascii=False)
            found += [f"redis {key} holds {n!r}" for n in needles if n in text]
    finally:
        await client.aclose()
    return found


async def in_kafka(bootstrap: str, needles: list[str]) -> list[str]:
    """Every record of every topic, read from the beginning."""
    found = []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"card-scan-{secrets.token_hex(4)}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        topics = sorted(await consumer.topics())
        assert topics, "the broker lists no topics"
        consumer.subscribe(topics)
        idle_since = time.monotonic()
        records = 0
        while time.monotonic() - idle_since < 6.0:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, messages in batch.items():
                for message in messages:
                    records += 1
                    raw = (message.value or b"").decode("utf-8", "replace")
                    found += [f"kafka {tp.topic} holds {n!r}" for n in needles if n in raw]
            if batch:
                idle_since = time.monotonic()
        assert records > 0, "no records read: the scan itself is broken"
    finally:
        await consumer.stop()
    return found


def in_logs(log_dir: Path, needles: list[str]) -> list[str]:
    found = []
    logs = sorted(log_dir.glob("*.log"))
    assert logs, f"no logs in {log_dir}"
    for path in logs:
        text = path.read_text(errors="replace")
        found += [f"log {path.name} holds {n!r}" for n in needles if n in text]
    return found


async def test_card_data_typed_on_any_channel_is_nowhere_afterwards(
    platform: Platform, provider: ProviderStandIn
) -> None:
    env = platform.stack.env()
    dsn = env["CBD_PG_DSN"]
    tag = secrets.token_hex(4)
    web, rest, text_msg = Secret("."), Secret("  "), Secret("-")
    web_conversation, rest_conversation = f"conv-{tag}", f"conv-rest-{tag}"
    number = new_number()

    url = platform.url("ingest").replace("http://", "ws://")
    socket_url = f"{url}/v1/conversations/{web_conversation}/ws?customer_id=web-{tag}"
    async with websockets.connect(socket_url) as ws:
        await ws.send(
            json.dumps({"type": "message", "text": web.message, "client_message_id": "m1"})
        )
        accepted = json.loads(await ws.recv())
        assert accepted["type"] == "accepted", accepted
        # What the customer's own screen shows back is the redacted text as well.
        assert f"[card ending {web.card[-4:]}]" in accepted["text"]
        assert web.card[:6] not in accepted["text"]
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=15) as http:
        resp = await http.post(
            f"/v1/conversations/{rest_conversation}/messages",
            json={"customer_id": f"acct-{tag}", "text": rest.message},
        )
        assert resp.status_code == 202, resp.text
        resp = await twilio_post(
            http, "/v1/channels/twilio/messages", sms(number, text_msg.message)
        )
        assert resp.status_code == 200, resp.text

    received = await wait_turns(dsn, "phone:" + number[1:], 1)
    assert received, "the SMS turn was not published"
    sms_conv = received[0]["conversation_id"]  # chosen by the server, at random
    for conversation, secret in (
        (web_conversation, web),
        (rest_conversation, rest),
        (sms_conv, text_msg),
    ):
        turns = await stored_turns(dsn, conversation)
        customer = next(t["text"] for t in turns if t["role"] == "customer")
        # The turn is kept, useful to a person, without the numbers.
        assert f"[card ending {secret.card[-4:]}]" in customer, customer
        assert "[security code]" in customer, customer
        assert "[SSN]" in customer, customer
        assert f"[IBAN ending {secret.iban[-4:]}]" in customer, customer
    assert await provider.wait_for(number, 1), provider.refused

    needles = [n for s in (web, rest, text_msg) for n in s.needles()]
    leaks = await in_postgres(dsn, needles)
    leaks += await in_redis(env["CBD_REDIS_URL"], needles)
    leaks += await in_kafka(env["CBD_KAFKA_BOOTSTRAP_SERVERS"], needles)
    leaks += in_logs(platform.stack.logs, needles)
    assert leaks == [], leaks
