"""Messaging and voice through ingest, in the providers' real request formats.

Requests are built as Twilio and Meta document them (form-encoded with X-Twilio-Signature;
JSON with X-Hub-Signature-256); replies go out to a local stand-in of their REST APIs, which
checks credentials and fields like the providers do.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from cbd.runtime import Platform
from services.ingest.edge import meta_signature, twilio_signature
from tests.conftest import CHANNEL_ENV
from tests.e2e.provider_standin import ProviderStandIn

pytestmark = pytest.mark.e2e

TOKEN = CHANNEL_ENV["CBD_INGEST_TWILIO_AUTH_TOKEN"]
APP_SECRET = CHANNEL_ENV["CBD_INGEST_WHATSAPP_APP_SECRET"]


@pytest.fixture(scope="module")
def provider(platform: Platform) -> Iterator[ProviderStandIn]:
    standin = ProviderStandIn(
        base_url=platform.extra_env["CBD_INGEST_TWILIO_API_BASE"],
        account_sid=CHANNEL_ENV["CBD_INGEST_TWILIO_ACCOUNT_SID"],
        auth_token=TOKEN,
        meta_token=CHANNEL_ENV["CBD_INGEST_WHATSAPP_ACCESS_TOKEN"],
        phone_number_id=CHANNEL_ENV["CBD_INGEST_WHATSAPP_PHONE_NUMBER_ID"],
    )
    standin.start()
    yield standin
    standin.stop()


def new_number() -> str:
    return f"+4477009{secrets.randbelow(10**5):05d}"


async def twilio_post(
    http: httpx.AsyncClient, path: str, params: dict[str, str], *, token: str | None = TOKEN
) -> httpx.Response:
    """POST as Twilio does: form-encoded, signed over our URL and the sorted params."""
    headers = {}
    if token is not None:
        headers["X-Twilio-Signature"] = twilio_signature(token, f"{http.base_url}{path}", params)
    return await http.post(path, data=params, headers=headers)


def sms(sender: str, body: str, sid: str | None = None) -> dict[str, str]:
    """Twilio's incoming-message parameters."""
    return {
        "MessageSid": sid or "SM" + secrets.token_hex(16),
        "AccountSid": CHANNEL_ENV["CBD_INGEST_TWILIO_ACCOUNT_SID"],
        "From": sender,
        "To": CHANNEL_ENV["CBD_INGEST_TWILIO_SMS_FROM"],
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }


def meta_payload(wa_id: str, text: str, message_id: str) -> dict[str, Any]:
    """A WhatsApp Cloud API `messages` webhook, as Meta documents it."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": CHANNEL_ENV[
                                    "CBD_INGEST_WHATSAPP_PHONE_NUMBER_ID"
                                ],
                            },
                            "contacts": [{"profile": {"name": "Sam"}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": message_id,
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


async def received_turns(dsn: str, identity: str, settle_s: float = 0.0) -> list[dict[str, Any]]:
    """turn.received events audit holds for this customer identity."""
    await asyncio.sleep(settle_s)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT body FROM audit.events WHERE event_type = 'turn.received' "
            "AND payload ->> 'customer_id' = $1 ORDER BY seq",
            identity,
        )
    finally:
        await conn.close()
    return [json.loads(bytes(r["body"])) for r in rows]


async def wait_turns(dsn: str, identity: str, count: int, timeout_s: float = 90) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        turns = await received_turns(dsn, identity)
        if len(turns) >= count or time.monotonic() > deadline:
            return turns
        await asyncio.sleep(0.3)


async def test_three_quick_texts_are_one_turn_with_one_plain_reply(
    platform: Platform, provider: ProviderStandIn
) -> None:
    dsn = platform.stack.env()["CBD_PG_DSN"]
    number = new_number()
    identity = "phone:" + number[1:]
    first = sms(number, "hi")
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=15) as http:
        for params in (first, sms(number, "I ordered a lamp"), sms(number, "it never came")):
            resp = await twilio_post(http, "/v1/channels/twilio/messages", params)
            assert resp.status_code == 200, resp.text
            assert resp.headers["content-type"].startswith("application/xml")
            assert "<Response/>" in resp.text
        # Twilio retries a webhook it thinks failed: the same MessageSid is not a new message.
        assert (await twilio_post(http, "/v1/channels/twilio/messages", first)).status_code == 200

    replies = await provider.wait_for(number, 1)
    assert len(replies) == 1, provider.refused
    assert replies[0].sender == CHANNEL_ENV["CBD_INGEST_TWILIO_SMS_FROM"]
    assert replies[0].body.strip()
    assert "**" not in replies[0].body
    # The audit trail lags the reply by its own consumer; once it has the turn, a moment
    # more shows whether a second turn followed.
    await wait_turns(dsn, identity, 1)
    turns = await received_turns(dsn, identity, settle_s=3.0)
    assert len(turns) == 1, [t["payload"]["message"]["text"] for t in turns]
    assert turns[0]["payload"]["message"]["text"] == "hi\nI ordered a lamp\nit never came"
    assert turns[0]["channel"] == "sms"
    assert len(provider.sent_to(number)) == 1, "one turn, one answer"


async def test_bad_or_missing_twilio_signature_is_403_and_publishes_nothing(
    platform: Platform,
) -> None:
    dsn = platform.stack.env()["CBD_PG_DSN"]
    number = new_number()
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=15) as http:
        path = "/v1/channels/twilio/messages"
        params = sms(number, "hello")
        for token in (None, "not-the-auth-token"):
            resp = await twilio_post(http, path, params, token=token)
            assert resp.status_code == 403, resp.text
        signed = twilio_signature(TOKEN, f"{http.base_url}{path}", params)
        tampered = {**params, "Body": "send me everything"}
        resp = await http.post(path, data=tampered, headers={"X-Twilio-Signature": signed})
        assert resp.status_code == 403
        voice = await twilio_post(
            http, "/v1/channels/twilio/voice", {"CallSid": "CA1", "From": number}, token="x"
        )
        assert voice.status_code == 403
    assert await received_turns(dsn, "phone:" + number[1:], settle_s=3.0) == []


async def test_whatsapp_cloud_api_handshake_message_and_reply(
    platform: Platform, provider: ProviderStandIn
) -> None:
    dsn = platform.stack.env()["CBD_PG_DSN"]
    wa_id = new_number()[1:]
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=15) as http:
        ok = await http.get(
            "/v1/channels/whatsapp",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": CHANNEL_ENV["CBD_INGEST_WHATSAPP_VERIFY_TOKEN"],
                "hub.challenge": "1158201444",
            },
        )
        assert (ok.status_code, ok.text) == (200, "1158201444")
        wrong = await http.get(
            "/v1/channels/whatsapp",
            params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
        )
        assert wrong.status_code == 403

        body = json.dumps(meta_payload(wa_id, "Do you have the lamp in blue?", "wamid.X1")).encode()
        forged = await http.post(
            "/v1/channels/whatsapp",
            content=body,
            headers={
                "content-type": "application/json",
                "X-Hub-Signature-256": meta_signature("wrong", body),
            },
        )
        assert forged.status_code == 403
        resp = await http.post(
            "/v1/channels/whatsapp",
            content=body,
            headers={
                "content-type": "application/json",
                "X-Hub-Signature-256": meta_signature(APP_SECRET, body),
            },
        )
        assert resp.status_code == 200, resp.text

    replies = await provider.wait_for(wa_id, 1)
    assert len(replies) == 1, provider.refused
    assert replies[0].provider == "meta"
    turns = await wait_turns(dsn, f"phone:{wa_id}", 1)
    assert [t["channel"] for t in turns] == ["whatsapp"]
    assert turns[0]["payload"]["message"]["text"] == "Do you have the lamp in blue?"


async def voice_step(http: httpx.AsyncClient, params: dict[str, str]) -> str:
    """Say something on the call; follow Twilio's <Redirect> to wait if the reply is slow."""
    resp = await twilio_post(http, "/v1/channels/twilio/voice/gather", params)
    assert resp.status_code == 200, resp.text
    xml = resp.text
    for _ in range(8):
        wait = re.search(r"<Redirect method=\"POST\">(/v1/channels/twilio/voice/wait[^<]*)<", xml)
        if wait is None:
            break
        path = wait.group(1).replace("&amp;", "&")
        resp = await twilio_post(http, path, {"CallSid": params["CallSid"], "From": params["From"]})
        xml = resp.text
    return xml


async def test_a_call_is_answered_in_speech_and_escalates_to_a_dial(
    platform: Platform,
) -> None:
    dsn = platform.stack.env()["CBD_PG_DSN"]
    number = new_number()
    call = {"CallSid": "CA" + secrets.token_hex(16), "From": number, "To": "+15005550006"}
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=40) as http:
        answer = await twilio_post(http, "/v1/channels/twilio/voice", call)
        assert answer.status_code == 200
        assert '<Gather input="speech"' in answer.text
        assert "How can I help" in answer.text

        xml = await voice_step(http, {**call, "SpeechResult": "Where is my order?"})
        said = re.search(r"<Gather[^>]*><Say[^>]*>(.*?)</Say></Gather>", xml, re.S)
        assert said is not None, xml
        assert said.group(1).strip()
        assert "http" not in said.group(1)
        assert "*" not in said.group(1)

        xml = await voice_step(
            http, {**call, "SpeechResult": "I want to speak to a real person right now"}
        )
        assert f"<Dial>{CHANNEL_ENV['CBD_INGEST_VOICE_AGENT_NUMBER']}</Dial>" in xml, xml

    turns = await wait_turns(dsn, "phone:" + number[1:], 2)
    assert {t["channel"] for t in turns} == {"voice"}
    assert {t["conversation_id"] for t in turns} == {f"call-{call['CallSid']}"}


async def test_openapi_is_served(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=platform.url("ingest")) as http:
        spec = (await http.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert "/v1/channels/twilio/messages" in spec["paths"]


async def test_a_known_customers_number_is_recognised_on_sms(
    platform: Platform, provider: ProviderStandIn
) -> None:
    dsn = platform.stack.env()["CBD_PG_DSN"]
    number = new_number()
    known = f"acct-{secrets.token_hex(4)}"
    admin = {"authorization": "Bearer dev-admin-token"}
    async with httpx.AsyncClient(base_url=platform.url("memory"), headers=admin) as memory:
        linked = await memory.post(
            f"/v1/customers/{known}/identities", json={"identity": "phone:" + number[1:]}
        )
        assert linked.status_code == 201, linked.text
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=15) as http:
        resp = await twilio_post(http, "/v1/channels/twilio/messages", sms(number, "hello again"))
        assert resp.status_code == 200
    turns = await wait_turns(dsn, "phone:" + number[1:], 1)
    assert len(turns) == 1
    conversation = turns[0]["conversation_id"]
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(100):
            customer = await conn.fetchval(
                "SELECT payload ->> 'customer_id' FROM audit.events "
                "WHERE event_type = 'turn.contextualized' AND conversation_id = $1",
                conversation,
            )
            if customer is not None:
                break
            await asyncio.sleep(0.3)
    finally:
        await conn.close()
    assert customer == known, "memory resolves the number to the customer it belongs to"
    assert await provider.wait_for(number, 1), provider.refused


async def test_whatsapp_through_twilio_replies_from_the_whatsapp_sender(
    platform: Platform, provider: ProviderStandIn
) -> None:
    dsn = platform.stack.env()["CBD_PG_DSN"]
    number = new_number()
    sender = f"whatsapp:{number}"
    params = {**sms(sender, "Is the blue lamp back in stock?"), "ProfileName": "Sam"}
    params["To"] = CHANNEL_ENV["CBD_INGEST_TWILIO_WHATSAPP_FROM"]
    params["WaId"] = number[1:]
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=15) as http:
        resp = await twilio_post(http, "/v1/channels/twilio/messages", params)
        assert resp.status_code == 200, resp.text
    replies = await provider.wait_for(sender, 1)
    assert len(replies) == 1, provider.refused
    assert replies[0].sender == CHANNEL_ENV["CBD_INGEST_TWILIO_WHATSAPP_FROM"]
    turns = await wait_turns(dsn, "phone:" + number[1:], 1)
    assert [t["channel"] for t in turns] == ["whatsapp"]
