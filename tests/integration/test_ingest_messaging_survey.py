"""The closing question on SMS, on the real Redis and broker, against a provider stand-in.

A close of an SMS conversation texts the question through the stand-in of Twilio's REST API
(which checks credentials and fields as Twilio does); the customer's "4 stars" becomes a
`feedback.received` record on the broker for the closed conversation, and nothing else.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from cbd.procs import free_port
from services.ingest.channels.identity import Address, Conversations
from services.ingest.channels.outbound import MessagingOutbound
from services.ingest.channels.survey import MessagingSurvey
from services.ingest.edge import EdgeGuard
from services.ingest.intake import Intake
from services.ingest.ownership import Owners, Party
from services.ingest.settings import IngestSettings
from shared.events import (
    Channel,
    CloseReason,
    ConversationClosed,
    ConversationClosedEvent,
    FeedbackReceivedEvent,
)
from shared.settings import KafkaSettings, RedisSettings
from shared.topics import Topic
from tests.e2e.provider_standin import ProviderStandIn
from tests.integration.care_support import read_topic, real_bus

pytestmark = pytest.mark.integration

SID = "AC" + "2" * 32
TOKEN = "standin-token"


@pytest.fixture
def provider() -> Iterator[ProviderStandIn]:
    standin = ProviderStandIn(
        base_url=f"http://127.0.0.1:{free_port()}",
        account_sid=SID,
        auth_token=TOKEN,
        meta_token="meta-token",
        phone_number_id="1234",
    )
    standin.start()
    yield standin
    standin.stop()


async def test_a_closed_sms_conversation_is_asked_once_and_the_answer_is_its_rating(
    redis_client: aioredis.Redis, isolated_kafka: KafkaSettings, provider: ProviderStandIn
) -> None:
    settings = IngestSettings(
        redis=RedisSettings(key_prefix=f"it-{secrets.token_hex(4)}:"),
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_api_base=provider.base_url,
        twilio_sms_from="+15005550006",
    )
    prefix = settings.redis.key_prefix
    number = f"+4477009{secrets.randbelow(10**5):05d}"
    identity = "phone:" + number[1:]
    party = Party(settings.messaging_tenant, identity)
    conversations = Conversations(redis_client, prefix, settings.conversation_idle_s)
    async with (
        real_bus(isolated_kafka) as bus,
        httpx.AsyncClient(timeout=10) as client,
    ):
        guard = EdgeGuard(settings, redis_client)
        intake = Intake(
            settings, bus, redis_client, guard, Owners(redis_client, prefix, settings.owner_ttl_s)
        )
        survey = MessagingSurvey(
            settings,
            redis_client,
            conversations,
            MessagingOutbound(settings, redis_client, client),
            intake,
        )
        address = Address("twilio", "sms", number)
        conv = await conversations.current("sms", identity, address)
        await intake.message(conv, party, Channel.SMS, "my parcel never came")
        closed = ConversationClosedEvent.create(
            conversation_id=conv,
            customer_id="cust-1",
            channel=Channel.SMS,
            payload=ConversationClosed(reason=CloseReason.AGENT_RESOLVED, disposition="resolved"),
        )
        assert await survey.ask(closed)
        assert await survey.ask(closed)  # redelivered: the question is not texted again
        answered = await survey.answer(Channel.SMS, identity, address, "4 stars, thanks", "SM1")
        again = await survey.answer(Channel.SMS, identity, address, "5", "SM2")
        await survey.ask(closed)  # a late redelivery does not ask again either
        later = await survey.answer(Channel.SMS, identity, address, "1", "SM3")

    assert [s.body for s in provider.sent_to(number)] == [
        settings.survey_question,
        settings.survey_thanks,
    ], provider.refused
    assert answered is not None
    assert answered.conversation_id == conv
    assert again is None  # the question was answered: "5" is an ordinary message now
    assert later is None
    records = await read_topic(isolated_kafka, Topic.FEEDBACK_RECEIVED, expect=1)
    assert len(records) == 1
    feedback = FeedbackReceivedEvent.model_validate(records[0])
    assert str(feedback.event_id) == answered.event_id
    assert feedback.conversation_id == conv
    assert feedback.channel is Channel.SMS
    assert feedback.payload.rating == 4
    assert feedback.payload.comment == "thanks"
