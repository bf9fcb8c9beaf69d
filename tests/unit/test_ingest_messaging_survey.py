"""The closing question on SMS and WhatsApp: asked once at the close, the answer a rating.

The real routers, intake and survey run on fakeredis with a recording bus; the provider's REST
API is an httpx mock that records each request. Webhooks are signed with Twilio's own
`RequestValidator`, as Twilio signs them. (tests/integration/test_ingest_messaging_survey.py
runs the same path on the real Redis and broker against a provider stand-in.)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl

import fakeredis
import httpx
import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from services.ingest.app import create_app
from services.ingest.channels.identity import Conversations
from services.ingest.channels.outbound import MessagingOutbound
from services.ingest.channels.replies import ChannelReplies
from services.ingest.channels.survey import MessagingSurvey
from services.ingest.channels.voice import VoiceReplies
from services.ingest.delivery import ConnectionHub, Fanout, conversation_fanout
from services.ingest.edge import EdgeGuard, meta_signature
from services.ingest.handlers import IngestHandlers
from services.ingest.intake import Intake
from services.ingest.ownership import Owners
from services.ingest.settings import IngestSettings
from shared import http
from shared.events import (
    Channel,
    CloseReason,
    ConversationClosed,
    ConversationClosedEvent,
    CustomerErased,
    CustomerErasedEvent,
    FeedbackReceivedEvent,
    TurnReceivedEvent,
    utcnow,
)
from shared.kafka import EventBus
from tests.kit import RecordingBus

TOKEN = "twilio-test-token"
SID = "AC" + "1" * 32
NUMBER = "+447700900123"
URL = "http://testserver/v1/channels/twilio/messages"


@dataclass
class Edge:
    client: TestClient
    bus: RecordingBus
    redis: aioredis.Redis
    handlers: IngestHandlers
    conversations: Conversations
    sent: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def edge() -> Edge:
    settings = IngestSettings(
        twilio_auth_token=TOKEN,
        twilio_account_sid=SID,
        twilio_sms_from="+15005550006",
        twilio_whatsapp_from="whatsapp:+15005550006",
        burst_window_ms=30_000,
        whatsapp_app_secret="meta-secret",
    )
    redis = cast(aioredis.Redis, fakeredis.FakeAsyncRedis(decode_responses=True))
    bus = RecordingBus()
    sent: list[dict[str, str]] = []

    def provider(request: httpx.Request) -> httpx.Response:
        sent.append(dict(parse_qsl(request.content.decode())))
        return httpx.Response(201, json={"sid": "SM" + uuid.uuid4().hex})

    app = create_app(settings)
    guard = EdgeGuard(settings, redis)
    intake = Intake(
        settings,
        cast(EventBus, bus),
        redis,
        guard,
        Owners(redis, settings.redis.key_prefix, settings.owner_ttl_s),
    )
    conversations = Conversations(redis, settings.redis.key_prefix, settings.conversation_idle_s)
    outbound = MessagingOutbound(
        settings, redis, httpx.AsyncClient(transport=httpx.MockTransport(provider))
    )
    survey = MessagingSurvey(settings, redis, conversations, outbound, intake)
    for collaborator in (guard, intake, conversations, survey):
        http.provide(app, collaborator)
    # Only the close handler runs here: no fanout or reply channels are needed.
    handlers = IngestHandlers(cast(Fanout, None), settings.redis.key_prefix, None, survey)
    return Edge(TestClient(app), bus, redis, handlers, conversations, sent)


def post(edge: Edge, body: str, sender: str = NUMBER) -> Any:
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": SID,
        "From": sender,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
    }
    signature = RequestValidator(TOKEN).compute_signature(URL, params)
    return edge.client.post(
        "/v1/channels/twilio/messages", data=params, headers={"X-Twilio-Signature": signature}
    )


def conversation_of(edge: Edge, channel: str = "sms", digits: str = "447700900123") -> str:
    async def read() -> str | None:
        value = await edge.redis.get(f"cbd:msgconv:{channel}:{digits}")
        return None if value is None else str(value)

    value = asyncio.run(read())
    assert value is not None
    return value


def parked(edge: Edge, conversation_id: str) -> list[str]:
    """The texts parked for burst merging: what will become the next turn."""

    async def read() -> list[str]:
        raw = await edge.redis.lrange(f"cbd:burst:{conversation_id}", 0, -1)
        return [str(json.loads(item)["text"]) for item in raw]

    return asyncio.run(read())


def close(edge: Edge, conversation_id: str, channel: Channel = Channel.SMS) -> None:
    event = ConversationClosedEvent.create(
        conversation_id=conversation_id,
        # Audit closes with memory's customer id, not the number: the survey must not need it.
        customer_id="cust-42",
        channel=channel,
        payload=ConversationClosed(reason=CloseReason.IDLE),
    )
    asyncio.run(edge.handlers.on_conversation_closed(event))


def test_a_closed_sms_conversation_gets_the_question_once(edge: Edge) -> None:
    assert post(edge, "my parcel never came").status_code == 200
    conv = conversation_of(edge)

    close(edge, conv)
    close(edge, conv)  # redelivered

    assert len(edge.sent) == 1
    assert edge.sent[0]["To"] == NUMBER
    assert edge.sent[0]["From"] == "+15005550006"
    assert "Reply 1-5" in edge.sent[0]["Body"]


@pytest.mark.parametrize(
    ("answer", "rating", "comment"),
    [
        ("5", 5, ""),
        ("four", 4, ""),
        ("4/5 - quick and kind", 4, "quick and kind"),
        ("2 stars", 2, ""),
    ],
)
def test_the_answer_is_a_rating_of_the_closed_conversation_not_a_turn(
    edge: Edge, answer: str, rating: int, comment: str
) -> None:
    assert post(edge, "my parcel never came").status_code == 200
    conv = conversation_of(edge)
    close(edge, conv)

    assert post(edge, answer).status_code == 200
    assert post(edge, "3").status_code == 200  # answered already: an ordinary message now

    [feedback] = edge.bus.events(FeedbackReceivedEvent)
    assert feedback.conversation_id == conv
    assert feedback.channel is Channel.SMS
    assert feedback.customer_id == "phone:447700900123"
    assert feedback.payload.rating == rating
    assert feedback.payload.comment == comment
    assert feedback.payload.source == "customer"
    # The answer never became part of a turn; the text after it did.
    assert parked(edge, conv) == ["my parcel never came", "3"]
    assert edge.sent[-1]["Body"].startswith("Thank you")


def test_a_text_that_is_not_an_answer_is_a_message_and_drops_the_question(edge: Edge) -> None:
    assert post(edge, "my parcel never came").status_code == 200
    conv = conversation_of(edge)
    close(edge, conv)

    assert post(edge, "it still has not come, order 12345").status_code == 200
    assert post(edge, "5").status_code == 200  # later: no longer read as a rating

    assert edge.bus.events(FeedbackReceivedEvent) == []
    assert parked(edge, conv) == ["my parcel never came", "it still has not come, order 12345", "5"]


def test_web_closes_and_unknown_numbers_get_no_question(edge: Edge) -> None:
    close(edge, "conv-web", Channel.WEB)
    close(edge, "sms-" + "0" * 32)

    assert edge.sent == []


def test_a_rating_the_broker_refused_is_taken_on_the_providers_retry(edge: Edge) -> None:
    assert post(edge, "my parcel never came").status_code == 200
    close(edge, conversation_of(edge))
    params = {"MessageSid": "SMretry", "AccountSid": SID, "From": NUMBER, "Body": "5"}
    headers = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(URL, params)}

    edge.bus.fail_with = ConnectionError("broker down")
    refused = edge.client.post("/v1/channels/twilio/messages", data=params, headers=headers)
    edge.bus.fail_with = None
    retried = edge.client.post("/v1/channels/twilio/messages", data=params, headers=headers)

    assert refused.status_code == 503
    assert retried.status_code == 200
    assert [f.payload.rating for f in edge.bus.events(FeedbackReceivedEvent)] == [5]
    assert edge.bus.events(TurnReceivedEvent) == []


def test_whatsapp_cloud_api_answers_are_ratings_too(edge: Edge) -> None:
    """Meta's webhook goes through the same closing question as Twilio's."""
    conv = "whatsapp-" + "a" * 32
    identity = "phone:447700900777"

    async def asked() -> None:
        await edge.redis.set(
            f"cbd:addr:{conv}",
            json.dumps({"provider": "meta", "channel": "whatsapp", "to": "447700900777"}),
        )
        await edge.redis.set(f"cbd:conv-owner:{conv}", json.dumps(["default", identity]))

    asyncio.run(asked())
    close(edge, conv, Channel.WHATSAPP)
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "changes": [
                    {
                        "value": {
                            "messages": [
                                {
                                    "from": "447700900777",
                                    "id": "wamid.1",
                                    "type": "text",
                                    "text": {"body": "5 stars"},
                                }
                            ]
                        }
                    }
                ]
            }
        ],
    }
    body = json.dumps(payload).encode()
    response = edge.client.post(
        "/v1/channels/whatsapp",
        content=body,
        headers={
            "content-type": "application/json",
            "x-hub-signature-256": meta_signature("meta-secret", body),
        },
    )

    assert response.status_code == 200, response.text
    [feedback] = edge.bus.events(FeedbackReceivedEvent)
    assert feedback.conversation_id == conv
    assert feedback.channel is Channel.WHATSAPP
    assert feedback.payload.rating == 5
    assert edge.bus.events(TurnReceivedEvent) == []


def test_erasure_forgets_the_end_of_chat_and_a_pending_question(edge: Edge) -> None:
    assert post(edge, "my parcel never came").status_code == 200
    conv = conversation_of(edge)
    close(edge, conv)
    event = CustomerErasedEvent.create(
        conversation_id=conv,
        customer_id="cust-42",
        channel=Channel.SMS,
        payload=CustomerErased(
            erased_customer_id="cust-42",
            identities=["phone:447700900123"],
            conversation_ids=[conv],
            requested_by="test",
            requested_at=utcnow(),
        ),
    )

    async def erase_and_list() -> list[str]:
        await edge.redis.set(f"cbd:conv-ended:{conv}", "{}")
        replies = ChannelReplies(
            edge.conversations,
            cast(MessagingOutbound, None),
            VoiceReplies(edge.redis, "cbd:"),
        )
        handlers = IngestHandlers(
            conversation_fanout(edge.redis, "cbd:", ConnectionHub()),
            "cbd:",
            replies,
        )
        await handlers.on_customer_erased(event)
        keys = await edge.redis.keys("cbd:*")
        return sorted(str(k) for k in keys)

    left = asyncio.run(erase_and_list())
    assert not [k for k in left if "survey" in k or "conv-ended" in k], left
