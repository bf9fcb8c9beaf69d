"""WhatsApp follow-ups outside the 24-hour window go out as approved templates.

The reply's `whatsapp_template:<name>` flag (audit's follow-up sets it) makes ingest's sender
use Twilio's Content API (`ContentSid`, `ContentVariables`) or Meta's template message instead
of free text; each request is recorded by an httpx mock and checked field by field.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, cast
from urllib.parse import parse_qsl

import fakeredis
import httpx
import pytest
import redis.asyncio as aioredis

from services.audit.followup import message_for, template_values
from services.ingest.channels.identity import Address, Conversations
from services.ingest.channels.outbound import MessagingOutbound, UnknownTemplate
from services.ingest.channels.replies import ChannelReplies
from services.ingest.channels.voice import VoiceReplies
from services.ingest.settings import IngestSettings
from shared.events import Channel, ReplyGenerated, ReplyGeneratedEvent, Role

SID = "AC" + "3" * 32
CONTENT_SID = "HX" + "ab" * 16
TO = "whatsapp:+447700900123"


def replies(
    provider: str = "twilio", templates: dict[str, str] | None = None
) -> tuple[ChannelReplies, list[httpx.Request], aioredis.Redis]:
    settings = IngestSettings(
        twilio_account_sid=SID,
        twilio_auth_token="tok",
        twilio_whatsapp_from="whatsapp:+15005550006",
        twilio_sms_from="+15005550006",
        whatsapp_access_token="meta-token",
        whatsapp_phone_number_id="1234",
        whatsapp_templates={"issue_follow_up": CONTENT_SID} if templates is None else templates,
    )
    redis = cast(aioredis.Redis, fakeredis.FakeAsyncRedis(decode_responses=True))
    recorded: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        recorded.append(request)
        return httpx.Response(201, json={"sid": "MM" + uuid.uuid4().hex})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    conversations = Conversations(redis, settings.redis.key_prefix, settings.conversation_idle_s)
    channel = "whatsapp"
    to = TO if provider == "twilio" else TO.removeprefix("whatsapp:+")
    asyncio.run(
        conversations.current(channel, "phone:447700900123", Address(provider, channel, to))
    )
    outbound = MessagingOutbound(settings, redis, client)
    voice = VoiceReplies(redis, settings.redis.key_prefix)
    return ChannelReplies(conversations, outbound, voice), recorded, redis


def conversation(redis: aioredis.Redis, channel: str = "whatsapp") -> str:
    async def read() -> str:
        return str(await redis.get(f"cbd:msgconv:{channel}:447700900123"))

    return asyncio.run(read())


def follow_up(conversation_id: str, channel: Channel = Channel.WHATSAPP) -> ReplyGeneratedEvent:
    """The follow-up audit publishes outside the window: flag, text and the template's values."""
    return ReplyGeneratedEvent.create(
        conversation_id=conversation_id,
        customer_id="cust-1",
        channel=channel,
        payload=ReplyGenerated(
            turn_id=uuid.uuid4(),
            reply_id=uuid.uuid4(),
            author=Role.SYSTEM,
            text=message_for("refund", "Sam"),
            flags=["follow_up", "whatsapp_template:issue_follow_up"],
            template_variables=template_values("refund", "Sam"),
        ),
    )


def test_twilio_sends_the_template_by_content_sid_with_its_variables_once() -> None:
    sender, recorded, redis = replies()
    event = follow_up(conversation(redis))

    asyncio.run(sender.deliver(event))
    asyncio.run(sender.deliver(event))  # redelivered: not sent again

    [request] = recorded
    assert request.method == "POST"
    assert str(request.url) == f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = dict(parse_qsl(request.content.decode()))
    assert form.keys() == {"To", "From", "ContentSid", "ContentVariables"}  # no free Body
    assert form["To"] == TO
    assert form["From"] == "whatsapp:+15005550006"
    assert form["ContentSid"] == CONTENT_SID
    assert json.loads(form["ContentVariables"]) == {"1": "Sam", "2": "your refund"}


def test_meta_sends_the_template_by_name_with_body_parameters_in_order() -> None:
    sender, recorded, redis = replies("meta")
    event = follow_up(conversation(redis))
    variables = {str(i): f"v{i}" for i in range(1, 12)}  # {{10}} after {{9}}, not after {{1}}
    event = event.model_copy(
        update={"payload": event.payload.model_copy(update={"template_variables": variables})}
    )

    asyncio.run(sender.deliver(event))

    [request] = recorded
    body: dict[str, Any] = json.loads(request.content)
    assert body["type"] == "template"
    assert body["to"] == "447700900123"
    assert "text" not in body
    assert body["template"]["name"] == "issue_follow_up"
    assert body["template"]["language"] == {"code": "en"}
    [component] = body["template"]["components"]
    assert [p["text"] for p in component["parameters"]] == [f"v{i}" for i in range(1, 12)]


def test_a_reply_without_the_flag_is_free_text() -> None:
    sender, recorded, redis = replies()
    event = follow_up(conversation(redis))
    plain = event.model_copy(
        update={"payload": event.payload.model_copy(update={"flags": ["follow_up"]})}
    )

    asyncio.run(sender.deliver(plain))

    form = dict(parse_qsl(recorded[0].content.decode()))
    assert "ContentSid" not in form
    assert form["Body"].startswith("Hi Sam,")


def test_a_template_without_a_content_sid_is_refused_for_the_dead_letter_topic() -> None:
    sender, recorded, redis = replies(templates={})
    event = follow_up(conversation(redis))

    with pytest.raises(UnknownTemplate, match="CBD_INGEST_WHATSAPP_TEMPLATES"):
        asyncio.run(sender.deliver(event))
    assert recorded == []
    # A name that is itself a Content SID needs no mapping.
    direct = event.model_copy(
        update={
            "payload": event.payload.model_copy(
                update={"flags": [f"whatsapp_template:{CONTENT_SID}"]}
            )
        }
    )
    asyncio.run(sender.deliver(direct))
    assert dict(parse_qsl(recorded[0].content.decode()))["ContentSid"] == CONTENT_SID
